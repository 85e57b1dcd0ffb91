"""Where the ingest stages run: `local.py` (this machine's cores) or `ray.py` (a Ray cluster:
`index --engine ray` through `ray_run.py`, and `embed --engine ray` into Parquet shards)."""
