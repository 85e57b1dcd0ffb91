"""Engines that run the embedding pipeline somewhere else than this process (Ray: `ray.py`)."""
