"""The server's settings (`ServerConfig`) and the limits shared by its modules."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MAX_ID = 2**63 - 1  # SQLite INTEGER


@dataclass
class ServerConfig:
    library: Path
    model: Optional[str] = None
    token: Optional[str] = None
    host: str = "127.0.0.1"  # used for the Host-header check (DNS rebinding) on loopback
    port: int = 8765
    pool_size: int = 1  # Library objects (SQLite connections) serving requests; 1 = a lock
    page_size: int = 30  # default k
    max_k: int = 200  # larger k are capped to this
    max_results: int = 1000  # offset + k never go beyond this
    max_query_chars: int = 500
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 80_000_000  # decompression-bomb guard for uploads (indexing: 179 MP)
    upload_concurrency: int = 2  # uploads decoded at once (memory bound)
    upload_cache: int = 128  # recent upload embeddings kept for paging (by id)
    text_cache: int = 1024  # recent text-query embeddings kept by the server
    text_batch: int = 1  # >1: concurrent text queries encoded together (no gain measured on 2 busy cores)
    thumbnail_dir: Optional[Path] = None  # default <library>/thumbnails
    thumbnail_concurrency: int = 2  # thumbnails and video frames decoded at once (worker processes)
    decode_in_workers: bool = True  # decode them in worker processes: a decoder crash does not take the server down
    warm: bool = True  # load both model towers and the index at start-up
    static_dir: Optional[Path] = None  # serve the page from here instead of the package (development)
