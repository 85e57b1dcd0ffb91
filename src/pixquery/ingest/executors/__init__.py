"""Where the ingest stages run: `local` (this machine's cores) or `ray` (a Ray cluster)."""
