"""The embedding pipeline: three stages that run side by side, so the encoder never waits.

    decoders (worker processes)  --pixels-->  feeder thread (in order; batches; normalises)
        --float batches-->  calling thread (encodes)  --vectors-->  writer thread (catalog)

- decoders: each job reads a file once, hashes it, decodes it (JPEG draft mode: a 12 MP photo is
  decoded at 1/8 scale), applies EXIF rotation and returns the model-size uint8 crop. They run at a
  lower CPU priority (nice) than the encoder: on a 2-core machine the encoder's threads keep the
  cores and decoding fills their idle moments, instead of the two fighting over time slices.
- feeder: keeps a bounded window of decodes in flight, takes results back in input order (each
  already normalised by its worker), stacks `batch_size` of them into one float32 batch, and
  reports failures per file. It runs at the decoders' priority too.
- calling thread: encodes one batch after another (ONNX Runtime releases the GIL), then hands the
  vectors to the writer; progress and failure callbacks are made here, never on another thread.
- writer: one catalog transaction per batch (sqlite3 releases the GIL too). An exception in it
  stops the run and is raised by embed_files.

Memory is bounded: a semaphore of `window` slots is taken before a file is submitted for decoding
and given back only once its pixels have been encoded, so no more than `window` decoded images
exist at any moment, whatever the number of files.

A worker that dies (a codec crashing on a malicious file, the OOM killer) breaks the process pool;
the files that were in flight are then decoded again one at a time in a fresh pool, so only the
file that kills its decoder is reported (as failed), and the run goes on.
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
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from pixquery import _failpoints
from pixquery.encoders.base import Encoder, PreprocessConfig
from pixquery.errors import BadImage
from pixquery.ingest.decode import Decoded, decode_file, normalize
from pixquery.ingest.scan import FileEntry

DECODERS = ("process", "thread")
# Defaults, read at each call (benchmarks change them to compare variants through Library.index):
DEFAULT_DECODER = "process"
DEFAULT_NICE = 10  # decoders' niceness above the encoder's (0 = same priority)


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
    encode_seconds: float = 0.0  # inside encoder.encode_images
    wait_decode_seconds: float = 0.0  # the encoder idle, waiting for a batch of pixels
    wait_write_seconds: float = 0.0  # the encoder idle, waiting for the writer to take a batch
    peak_held: int = 0  # most decoded images alive at once (never above `window`)
    window: int = 0
    batches: int = 0
    decoder_restarts: int = 0  # process pools replaced after a worker died


def decode_job(path: str, cfg: PreprocessConfig, draft: bool = True):
    """Runs in a worker: read the bytes once (hash + decode + normalise), return the model's input
    for this image, (3, H, W) float32, or the reason it failed. Normalising here, in the low-priority
    workers, keeps that work (about 1 ms an image) off the encoder's cores' foreground."""
    try:
        _failpoints.hit("decode_worker/" + os.path.basename(path))  # crash tests: kill this worker
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BadImage(path, f"cannot read: {e.strerror or e}") from None
        if not data:
            raise BadImage(path, "empty file (0 bytes)")
        digest = hashlib.sha256(data).hexdigest()
        decoded = decode_file(io.BytesIO(data), cfg, draft=draft, name=path)
        decoded.pixels = normalize(decoded.pixels[None], cfg)[0]
        return True, decoded, digest
    except BadImage as e:
        return False, e.reason, None
    except Exception as e:  # a bug in a codec must not stop a 100,000-photo run
        return False, f"unexpected {type(e).__name__}: {e}", None


def default_workers() -> int:
    """One decoder per core the process may use. The decoders run niced, so while the encoder
    computes they barely take its cores (its speed inside the pipeline equals its speed alone), and
    whenever it waits for pixels every core decodes. With one decoder fewer than cores, that wait
    ran on one core while the other idled: 12 MP photos on 2 cores went from 0.74 to 0.82 of the
    encoder's speed with 2 decoders (docs/performance.md)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_window(batch_size: int, workers: int) -> int:
    # Room for the batch being encoded, one complete batch queued behind it and the decodes that
    # fill the next one; more only costs memory (150 KB an image at 224 px).
    return max(3 * batch_size, batch_size + 8 * workers)


def _lower_priority(nice: int) -> None:
    """Lower the calling worker's CPU priority. On Linux niceness is per thread, so this works
    for a decode thread too (os.nice would change the whole process)."""
    if nice <= 0:
        return
    try:
        if threading.current_thread() is threading.main_thread():
            os.nice(nice)
        else:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (OSError, AttributeError):
        pass


def _die_with(owner: int) -> None:
    """A decode process must not outlive the run. If the indexing process is killed (kill -9), a
    worker blocked on its task queue would wait forever, and so would the forkserver (every worker
    holds its "parent alive" pipe), holding the caller's stdout/stderr pipes open. Their parent is
    the forkserver, not the indexing process, so a thread watches the indexing process's pid."""

    def alive() -> bool:
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        try:  # killed but not yet reaped (its parent may be waiting for our pipes to close)
            with open(f"/proc/{owner}/stat", "rb") as f:
                return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
        except (OSError, IndexError):
            return True

    def watch():
        while alive():
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="pixquery-owner-watch", daemon=True).start()


def _init_decode_process(nice: int, owner: int) -> None:
    _die_with(owner)
    _lower_priority(nice)


class _Decoders:
    """A pool of decode workers (processes or threads) that survives a worker's death."""

    def __init__(self, kind: str, workers: int, nice: int):
        if kind not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {kind!r}")
        self.kind, self.workers, self.nice = kind, workers, nice
        self.restarts = 0
        self.pool = self._new_pool()

    def _new_pool(self):
        if self.kind == "thread":
            return ThreadPoolExecutor(self.workers, thread_name_prefix="pixquery-decode",
                                      initializer=_lower_priority, initargs=(self.nice,))
        # forkserver: workers start from a clean process, never from a fork of one that already
        # runs ONNX Runtime threads (or holds the catalog's locks).
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["pixquery.ingest.decode", "pixquery.ingest.pipeline"])
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_decode_process,
                                   initargs=(self.nice, os.getpid()))

    def submit(self, path: str, cfg: PreprocessConfig, draft: bool) -> Future:
        """Start decoding a file. concurrent.futures marks a pool broken on its own thread once a
        worker has died, so a submit can find it broken before any result has said so: the file
        then gets a future failed with BrokenProcessPool, handled like any other broken result
        (the pool is rebuilt and the files in flight are decoded again one at a time)."""
        try:
            return self.pool.submit(decode_job, path, cfg, draft)
        except BrokenProcessPool as e:
            failed: Future = Future()
            failed.set_exception(e)
            return failed

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        self.pool = self._new_pool()

    def isolate(self, path: str, cfg: PreprocessConfig, draft: bool):
        """Decode one file alone; a worker that dies on it is that file's failure."""
        for _ in range(2):
            try:
                future = self.pool.submit(decode_job, path, cfg, draft)
            except BrokenProcessPool:  # broken before this file reached it: not this file's doing
                self.restart()
                continue
            try:
                return future.result()
            except BrokenProcessPool:
                self.restart()
                return False, "the decoder process died on this file (crash in an image codec, or out of memory)", None
        return False, "the decoder processes keep dying (out of memory?)", None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Stop(Exception):
    pass


def embed_files(
    entries: Sequence[FileEntry],
    encoder: Encoder,
    write: Callable[[list[Embedded]], None],
    *,
    batch_size: int | None = 32,
    workers: int | None = None,
    draft: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    decoder: str | None = None,
    nice: int | None = None,
    window: int | None = None,
) -> PipelineStats:
    """Embed `entries` and pass each finished batch, in input order, to `write` (called on the
    writer thread). Files that cannot be decoded are reported, never fatal; an exception from the
    encoder or from `write` stops the run and is raised here.

    on_progress(done, failed) and on_failure(path, reason) are called on this thread: progress
    after each batch and each failure, on_failure once per file that could not be used.
    decoder: "process" (the default: a crashing codec cannot take the run down) or "thread"
    (Pillow releases the GIL while decoding and resizing). nice: how much lower the decoders' CPU
    priority is than the encoder's (default 10). window: most decoded images alive at once
    (default: 3 batches). batch_size None: the encoder's `preferred_batch_size` if it has one.
    """
    stats = PipelineStats()
    t0 = time.perf_counter()
    if not entries:
        return stats
    if batch_size is None:
        batch_size = int(getattr(encoder, "preferred_batch_size", 32))
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    cfg = encoder.preprocess_cfg
    decoder = decoder or DEFAULT_DECODER
    nice = DEFAULT_NICE if nice is None else nice
    workers = workers or default_workers()
    window = max(window or default_window(batch_size, workers), batch_size + 1)
    stats.window = window

    slots = threading.Semaphore(window)
    held = [0]  # decoded images alive (submitted and not yet encoded)
    held_lock = threading.Lock()
    stop = threading.Event()
    ready: queue.Queue = queue.Queue()  # feeder -> this thread: ("batch", ...), ("failed", ...), ("error", e), None
    writes: queue.Queue = queue.Queue(maxsize=2)
    writer_error: list[BaseException] = []

    def take_slot(block: bool) -> bool:
        """One decoded image more may exist. Blocking waits (checking `stop`) for the encoder to free one."""
        if block:
            while not slots.acquire(timeout=0.1):
                if stop.is_set():
                    return False
        elif not slots.acquire(blocking=False):
            return False
        with held_lock:
            held[0] += 1
            stats.peak_held = max(stats.peak_held, held[0])
        return True

    def give_slots(n: int) -> None:
        with held_lock:
            held[0] -= n
        for _ in range(n):
            slots.release()

    decoders = _Decoders(decoder, workers, nice)

    def feeder():
        _lower_priority(nice)  # this thread only (Linux): stacking batches yields to the encoder
        batch: list[tuple[FileEntry, Decoded, str]] = []

        def flush():
            if batch:
                pixels = np.stack([d.pixels for _, d, _ in batch])
                ready.put(("batch", list(batch), pixels))
                batch.clear()

        def take(entry, result):
            ok, payload, digest = result
            if ok:
                batch.append((entry, payload, digest))
                if len(batch) >= batch_size:
                    flush()
            else:
                give_slots(1)
                ready.put(("failed", entry, payload))

        try:
            pending: deque = deque()
            it = iter(entries)
            exhausted = False
            while not stop.is_set():
                # Keep the window full. Block for a slot only when no result waits to be taken
                # (results taken make batches, and encoded batches free slots).
                while not exhausted and take_slot(block=not pending):
                    entry = next(it, None)
                    if entry is None:
                        exhausted = True
                        give_slots(1)
                        break
                    pending.append((entry, decoders.submit(entry.path, cfg, draft)))
                if stop.is_set():
                    break
                if not pending:
                    break
                entry, future = pending.popleft()
                try:
                    result = future.result()
                except BrokenProcessPool:
                    # A worker died. Decode what was in flight again, one file at a time, in a fresh
                    # pool: the file that kills its decoder again is the culprit.
                    decoders.restart()
                    redo = [entry] + [e for e, _ in pending]
                    pending.clear()
                    for e in redo:
                        if stop.is_set():
                            raise _Stop
                        take(e, decoders.isolate(e.path, cfg, draft))
                    continue
                take(entry, result)
            if not stop.is_set():
                flush()
        except _Stop:
            pass
        except BaseException as e:  # a bug here must surface on the calling thread, not hang it
            ready.put(("error", e))
        finally:
            ready.put(None)

    def writer_loop():
        while True:
            item = writes.get()
            if item is None:
                return
            if writer_error:
                continue  # drain so the encoder never blocks
            try:
                write(item)
            except BaseException as e:  # re-raised on the calling thread
                writer_error.append(e)
                stop.set()

    feed = threading.Thread(target=feeder, name="pixquery-feeder", daemon=True)
    writer = threading.Thread(target=writer_loop, name="pixquery-writer", daemon=True)
    feed.start()
    writer.start()
    done = failed = 0
    try:
        # Create the encoder's session (and run it once) while the decoders fill the first batch:
        # ONNX Runtime's start-up (~0.8 s for ViT-B/32) then costs the run nothing.
        warm_up = getattr(encoder, "warm_up", None)
        if warm_up is not None:
            warm_up(("visual",))
        while True:
            tw = time.perf_counter()
            item = ready.get()
            stats.wait_decode_seconds += time.perf_counter() - tw
            if item is None:
                break
            if writer_error:
                break
            kind = item[0]
            if kind == "error":
                raise item[1]
            if kind == "failed":
                _, entry, reason = item
                failed += 1
                done += 1
                stats.failed.append((entry.path, reason))
                if on_failure:
                    on_failure(entry.path, reason)
                if on_progress:
                    on_progress(done, failed)
                continue
            _, batch, pixels = item
            te = time.perf_counter()
            try:
                vectors = encoder.encode_images(pixels)
            finally:
                give_slots(len(batch))
            stats.encode_seconds += time.perf_counter() - te
            stats.batches += 1
            out = [Embedded(e, h, d.width, d.height, v) for (e, d, h), v in zip(batch, vectors)]
            tw = time.perf_counter()
            writes.put(out)
            stats.wait_write_seconds += time.perf_counter() - tw
            stats.embedded += len(out)
            done += len(out)
            if on_progress:
                on_progress(done, failed)
    finally:
        stop.set()
        if feed.is_alive():  # stopped early: cancel what is queued; a decode running ends soon
            decoders.pool.shutdown(wait=False, cancel_futures=True)
        feed.join()
        writes.put(None)
        writer.join()
        decoders.close()
        stats.decoder_restarts = decoders.restarts
    if writer_error:
        raise writer_error[0]
    stats.seconds = time.perf_counter() - t0
    return stats
