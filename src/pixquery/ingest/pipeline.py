"""The ingest pipeline, one for every source: stages with one job each, run by an executor.

    sources.py   the plan: files under the roots vs the catalog -> MediaItems (photo, video)
    workers.py   decode: an item -> pieces (decoded once; crops.py cuts the whole picture,
                 region tiles and detector boxes, or a video's sampled frames and theirs)
    encode       batches of crops of any origin through one encoder (in the executor)
    write.py     a batch of embedded items -> the catalog, in one transaction
    executors/   local.py (processes on this machine) or ray.py (a Ray cluster)

Photos, regions, video frames, uploads and `Library.embed_image` all go through these stages;
`embed_picture` runs them in-process for a single picture (an upload, a query image).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pixquery.encoders.base import Encoder
from pixquery.errors import PixqueryError
from pixquery.ingest.decode import MAX_PIXELS
from pixquery.ingest.executors.local import PipelineStats, run_local
from pixquery.ingest.items import PHOTO, DecodeSettings, EmbeddedItem, MediaItem
from pixquery.ingest.scan import FileEntry
from pixquery.ingest.workers import photo_piece

ENGINES = ("local", "ray")


def check_engine(engine: str) -> None:
    """A PixqueryError now, before any work, when `engine` is unknown or its library is missing."""
    if engine not in ENGINES:
        raise PixqueryError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "ray" and importlib.util.find_spec("ray") is None:
        raise PixqueryError("--engine ray needs Ray, which is not installed: pip install 'pixquery[ray]'")


def run(
    items: Sequence[MediaItem],
    encoder: Encoder,
    settings: DecodeSettings,
    write: Callable[[list[EmbeddedItem]], None],
    *,
    engine: str = "local",
    address: str | None = None,
    **kw,
) -> PipelineStats:
    """Run the stages over `items` on an executor: "local" (this machine) or "ray" (a Ray
    cluster at `address`; None starts a local one for the run). Same results either way."""
    if engine == "local":
        return run_local(items, encoder, settings, write, **kw)
    if engine == "ray":
        from pixquery.ingest.executors.ray_run import run_ray

        return run_ray(items, encoder, settings, write, address=address, **kw)
    raise PixqueryError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")


def embed_picture(
    data: bytes, encoder: Encoder, *, name: str = "picture", draft: bool = True, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """One picture's bytes -> its embedding, in this process, through the same decode and crop
    stage as indexing (the bomb guard included). Raises BadImage naming `name`."""
    item = MediaItem(name, len(data), 0, PHOTO)
    piece = photo_piece(item, data, DecodeSettings(encoder.preprocess_cfg, draft=draft), max_pixels=max_pixels)
    return encoder.encode_images(piece.pixels)[0]


@dataclass
class Embedded:
    """One photo file embedded whole, as `embed_files` hands it to its writer."""

    entry: FileEntry
    sha256: str
    width: int
    height: int
    vector: np.ndarray


def embed_files(
    entries: Sequence[FileEntry], encoder: Encoder, write: Callable[[list[Embedded]], None], *, draft: bool = True, **kw
) -> PipelineStats:
    """Photo files -> their whole-picture embeddings, in input order, through the local executor
    (evaluation and benchmarks: no catalog). `write` gets lists of Embedded."""
    by_path = {e.path: e for e in entries}
    items = [MediaItem(e.path, e.size, e.mtime_ns, PHOTO) for e in entries]

    def write_items(done: list[EmbeddedItem]) -> None:
        write([Embedded(by_path[e.item.path], e.sha256, e.width, e.height, e.vectors[0]) for e in done])

    return run_local(items, encoder, DecodeSettings(encoder.preprocess_cfg, draft=draft), write_items, **kw)


def entry_for(path: str) -> FileEntry:
    st = os.stat(path)
    return FileEntry(path, st.st_size, st.st_mtime_ns)
