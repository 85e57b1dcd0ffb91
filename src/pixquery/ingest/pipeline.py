"""The embedding pipeline: decode in worker processes -> encode in batches -> write in a thread.

    reader (worker pool, sliding window)  ->  mapper (this thread: normalise + encode a batch)
                                          ->  writer (a thread: one catalog transaction per batch)

The encoder is the bottleneck (about 50 ms an image for ViT-B/32 on 2 cores against 3-25 ms to
decode), so everything else runs beside it: decoding in processes (PIL holds the GIL for part of
its work), catalog writes in a thread (sqlite3 and ONNX Runtime both release the GIL). The window
of decodes in flight is bounded, so memory stays flat for any number of files.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing as mp
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from pixquery.encoders.base import Encoder, PreprocessConfig
from pixquery.errors import BadImage
from pixquery.ingest.decode import Decoded, decode_file, normalize
from pixquery.ingest.scan import FileEntry


@dataclass
class Embedded:
    """One decoded and embedded file, as handed to the writer."""

    entry: FileEntry
    sha256: str
    width: int
    height: int
    vector: np.ndarray


@dataclass
class PipelineStats:
    embedded: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0


def decode_job(path: str, cfg: PreprocessConfig, draft: bool = True):
    """Runs in a worker: read the bytes once (hash + decode), return pixels or the reason."""
    try:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadImage(path, f"cannot read: {e.strerror or e}") from None
        digest = hashlib.sha256(data).hexdigest()
        if not data:
            raise BadImage(path, "empty file (0 bytes)")
        decoded = decode_file(io.BytesIO(data), cfg, draft=draft, name=path)
        return True, decoded, digest
    except BadImage as e:
        return False, e.reason, None
    except Exception as e:  # a bug in a codec must not stop a 100,000-photo run
        return False, f"unexpected {type(e).__name__}: {e}", None


def default_workers() -> int:
    # One decoder per core beyond the first: the encoder's threads use the rest.
    return max(1, (os.cpu_count() or 2) - 1)


def embed_files(
    entries: Sequence[FileEntry],
    encoder: Encoder,
    write: Callable[[list[Embedded]], None],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    draft: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
) -> PipelineStats:
    """Embed `entries` and pass each finished batch to `write` (called on the writer thread).

    on_progress(done, failed) is called on this thread after every file; on_failure(path, reason)
    once per file that could not be used.
    """
    stats = PipelineStats()
    t0 = time.perf_counter()
    if not entries:
        return stats
    cfg = encoder.preprocess_cfg
    workers = workers or default_workers()
    window = max(batch_size * 2, workers * 8)

    writes: queue.Queue = queue.Queue(maxsize=3)
    writer_error: list[BaseException] = []

    def writer_loop():
        while True:
            item = writes.get()
            if item is None:
                return
            if writer_error:
                continue  # drain so the producer never blocks
            try:
                write(item)
            except BaseException as e:  # re-raised on the main thread
                writer_error.append(e)

    writer = threading.Thread(target=writer_loop, name="pixquery-writer", daemon=True)
    # forkserver: workers start from a clean process, never from a fork of one that already runs
    # ONNX Runtime threads.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pixquery.ingest.decode", "pixquery.ingest.pipeline"])
    pool = ctx.Pool(workers)
    writer.start()
    done = failed = 0
    batch_entries: list[FileEntry] = []
    batch_decoded: list[tuple[Decoded, str]] = []

    def flush():
        if not batch_entries:
            return
        pixels = normalize(np.stack([d.pixels for d, _ in batch_decoded]), cfg)
        te = time.perf_counter()
        vectors = encoder.encode_images(pixels)
        stats.encode_seconds += time.perf_counter() - te
        out = [Embedded(e, h, d.width, d.height, v) for e, (d, h), v in zip(batch_entries, batch_decoded, vectors)]
        stats.embedded += len(out)
        writes.put(out)
        batch_entries.clear()
        batch_decoded.clear()

    try:
        pending: deque = deque()
        it = iter(entries)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                entry = next(it, None)
                if entry is None:
                    exhausted = True
                    break
                pending.append((entry, pool.apply_async(decode_job, (entry.path, cfg, draft))))
            if not pending:
                break
            entry, result = pending.popleft()
            ok, payload, digest = result.get()
            if ok:
                batch_entries.append(entry)
                batch_decoded.append((payload, digest))
                if len(batch_entries) >= batch_size:
                    flush()
            else:
                failed += 1
                stats.failed.append((entry.path, payload))
                if on_failure:
                    on_failure(entry.path, payload)
            done += 1
            if on_progress:
                on_progress(done, failed)
            if writer_error:
                break
        flush()
    finally:
        pool.terminate()
        writes.put(None)
        writer.join()
        pool.join()
    if writer_error:
        raise writer_error[0]
    stats.seconds = time.perf_counter() - t0
    return stats
