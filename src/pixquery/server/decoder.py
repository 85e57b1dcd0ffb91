"""Thumbnails and video frames decoded in worker processes, so that a file that crashes a decoder
(a codec bug hit by a crafted photo or video) costs one error answer, not the server.

As the indexer's decode workers do (pixquery.ingest.executors.local): a ProcessPoolExecutor of
forkserver processes (never a fork of the server, which runs ONNX Runtime threads) that watch the
server's pid and exit with it. A worker that dies breaks the pool; the pool is rebuilt and the
job tried once more in the fresh pool (the death may have been another request's file), and a
second death is this file's: `DecoderCrashed`. A job that runs past `timeout` is one too (at
once; its workers are killed).

A worker opens the file through the server's own descriptor (/proc/SERVER_PID/fd/N on Linux), so
it reads the very file the server opened and checked (pixquery.server.files), not whatever the
path names by then. The jobs return ("ok", jpeg) or ("bad", reason): a file that cannot be
decoded is an answer, not an exception that has to survive pickling.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from pixquery import _failpoints

log = logging.getLogger("pixquery.server")


class DecoderCrashed(Exception):
    """The decoder died (or hung) on this file, twice."""


def shared_path(fd: int, fallback: str) -> str:
    """A path through which another process opens this process's open file `fd` (Linux), else
    `fallback` (the checked real path: looked up again, the best other systems allow)."""
    path = f"/proc/{os.getpid()}/fd/{fd}"
    return path if os.path.exists(path) else fallback


# -- the jobs (run in the workers) ------------------------------------------------------------


def thumbnail_job(path: str, name: str, size: int, max_pixels: int, quality: int) -> tuple[str, bytes | str]:
    from pixquery.errors import BadImage
    from pixquery.ingest.decode import load_image
    from pixquery.server.thumbnails import encode_jpeg

    _failpoints.hit("thumbnail_worker/" + name)  # crash tests: this worker dies on this file
    try:
        with open(path, "rb") as f:
            img = load_image(f, draft_size=size, max_pixels=max_pixels, name=name or "image")  # RAW known by extension
        return "ok", encode_jpeg(img, size, quality)
    except BadImage as e:
        return "bad", e.reason
    except OSError as e:
        return "bad", f"cannot read: {e.strerror or e}"


def frame_job(path: str, name: str, timestamp: float, size: int, quality: int) -> tuple[str, bytes | str]:
    from pixquery.ingest.video import VideoError, extract_frame
    from pixquery.server.thumbnails import encode_jpeg

    _failpoints.hit("thumbnail_worker/" + name)
    try:
        return "ok", encode_jpeg(extract_frame(path, timestamp), size, quality)
    except VideoError as e:
        return "bad", e.reason


def _warm() -> int:
    """Imports the decoders now (a worker's first real job then pays no import)."""
    import importlib

    for module in ("pixquery.ingest.decode", "pixquery.server.thumbnails"):
        importlib.import_module(module)
    return os.getpid()


def _init_worker(owner: int) -> None:
    from pixquery.ingest.executors.local import _die_with

    _die_with(owner)


# -- the pool (in the server) -----------------------------------------------------------------


class DecodeWorkers:
    def __init__(self, workers: int = 2, timeout: float = 120.0):
        self.workers = max(1, int(workers))
        self.timeout = timeout
        self.restarts = 0  # pools rebuilt after a worker died (for tests and logs)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                ctx = mp.get_context("forkserver")
                ctx.set_forkserver_preload(["pixquery.server.decoder", "pixquery.server.thumbnails"])
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
                )
            return self._pool

    def _restart(self, broken: ProcessPoolExecutor, kill: bool = False) -> None:
        with self._lock:
            if self._pool is not broken:  # another request rebuilt it already
                return
            self._pool = None
            self.restarts += 1
        if kill:  # a hung decoder: shutdown alone would wait for it
            for proc in list(getattr(broken, "_processes", {}).values()):
                proc.kill()
        broken.shutdown(wait=False, cancel_futures=True)

    def warm(self) -> None:
        """Start the workers now, not on the first thumbnail."""
        pool = self._current()
        for future in [pool.submit(_warm) for _ in range(self.workers)]:
            future.result(timeout=self.timeout)

    def run(self, job, *args):
        """job(*args) in a worker; DecoderCrashed when the worker dies (or hangs) on it twice."""
        for attempt in (1, 2):
            pool = self._current()
            try:
                future = pool.submit(job, *args)
            except BrokenProcessPool:  # broken before this job reached it: not this file's doing
                self._restart(pool)
                pool = self._current()
                future = pool.submit(job, *args)
            try:
                return future.result(timeout=self.timeout)
            except BrokenProcessPool:
                log.warning("a decode worker died (attempt %d of 2); starting new ones", attempt)
                self._restart(pool)
            except FutureTimeout:
                log.warning("a decode worker took over %.0fs; killing it", self.timeout)
                self._restart(pool, kill=True)
                raise DecoderCrashed(f"the decoder took over {self.timeout:.0f}s on this file") from None
        raise DecoderCrashed("the decoder crashed on this file")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
