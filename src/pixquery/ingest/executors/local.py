"""The local executor: the ingest stages side by side on one machine, so the encoder never waits.

    decode workers (processes)  --pieces-->  feeder thread (input order; cuts batches of crops)
        --batches-->  calling thread (encodes)  --embedded items-->  writer thread (catalog)

- decode workers: a process pool for photos (each job: read, hash, decode once, cut crops,
  normalise: see ingest/workers.py); a video gets a process of its own that streams its pieces
  through a small queue as it decodes. Workers run at a lower CPU priority (nice) than the encoder:
  on a 2-core machine the encoder's threads keep the cores and decoding fills their idle moments.
- feeder: keeps a bounded window of items in flight, takes their pieces back in input order and
  cuts them into batches of exactly `batch_size` crops (a photo's crops may span two batches).
- calling thread: encodes one batch after another (ONNX Runtime releases the GIL), gathers each
  item's vectors and hands finished items to the writer; progress and failure callbacks are made
  here, never on another thread.
- writer: calls `write(items)` once per batch (one catalog transaction). An exception there stops
  the run and is raised by `run_local`.

Memory is bounded: a semaphore of `window` slots is taken before an item is submitted and given
back once all of its crops are encoded; a video holds one slot and at most two pieces in its queue.

A worker that dies (a codec crashing on a malicious file, the OOM killer) breaks the process pool;
the photos that were in flight are then decoded again one at a time in a fresh pool, so only the
file that kills its decoder is reported (as failed), and the run goes on. A video's decoder dying
ends that video: what it sent is kept and the rest reported, or the video fails if it sent nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

from pixquery.encoders.base import Encoder
from pixquery.ingest.items import VIDEO, DecodeSettings, EmbeddedItem, MediaItem, Piece, failed
from pixquery.ingest.workers import decode_photo, decode_video

DECODERS = ("process", "thread")
# Defaults, read at each call (benchmarks change them to compare variants through Library.index):
DEFAULT_DECODER = "process"
DEFAULT_NICE = 10  # decoders' niceness above the encoder's (0 = same priority)
# With OCR on, the decoders also detect text: work as heavy as the encoder's, not filler for its
# idle moments. Niced, it got the cores only when every other process on the machine let it
# (a shared 2-core machine under load: 0.40 of the speed without OCR at nice 10, 0.57-0.61 at 0;
# bench/results/ocr-accuracy.md). On a machine of its own the total work is the same either way.
OCR_NICE = 0
DIED = "the decoder process died on this file (crash in an image codec, or out of memory)"


@dataclass
class PipelineStats:
    embedded: int = 0  # items written
    crops: int = 0  # pictures encoded (whole photos, regions, frames)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): nothing of it written
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): written in part
    seconds: float = 0.0
    encode_seconds: float = 0.0  # inside encoder.encode_images
    wait_decode_seconds: float = 0.0  # the encoder idle, waiting for a batch of pixels
    wait_write_seconds: float = 0.0  # the encoder idle, waiting for the writer to take a batch
    peak_held: int = 0  # most items in flight at once (never above `window`)
    window: int = 0
    batches: int = 0
    decoder_restarts: int = 0  # process pools replaced after a worker died


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
    # fill the next one; more only costs memory (600 KB a crop at 224 px, float32).
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


def _context(settings: DecodeSettings):
    # forkserver: workers start from a clean process, never from a fork of one that already runs
    # ONNX Runtime threads (or holds the catalog's locks). What it preloads, every worker starts
    # with: with OCR on, the engine's modules too (rapidocr 3 takes ~0.4 s to import, which each
    # worker would pay again). The server process is started once per process, with the list of
    # the first run that starts it; a name that does not import is skipped.
    ctx = mp.get_context("forkserver")
    preload = ["pixquery.ingest.workers", "pixquery.ingest.executors.local"]
    if settings.ocr is not None:
        from pixquery.ingest.ocr_engines import modules_to_preload

        preload += modules_to_preload(getattr(settings.ocr, "engine", ""))
    ctx.set_forkserver_preload(preload)
    return ctx


class _Decoders:
    """A pool of photo decode workers (processes or threads) that survives a worker's death."""

    def __init__(self, kind: str, workers: int, nice: int, settings: DecodeSettings):
        if kind not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, not {kind!r}")
        self.kind, self.workers, self.nice, self.settings = kind, workers, nice, settings
        self.restarts = 0
        self.pool = self._new_pool()

    def _new_pool(self):
        if self.kind == "thread":
            return ThreadPoolExecutor(
                self.workers, thread_name_prefix="pixquery-decode", initializer=_lower_priority, initargs=(self.nice,)
            )
        return ProcessPoolExecutor(
            self.workers,
            mp_context=_context(self.settings),
            initializer=_init_decode_process,
            initargs=(self.nice, os.getpid()),
        )

    def submit(self, item: MediaItem) -> Future:
        """Start decoding a photo. concurrent.futures marks a pool broken on its own thread once a
        worker has died, so a submit can find it broken before any result has said so: the file
        then gets a future failed with BrokenProcessPool, handled like any other broken result
        (the pool is rebuilt and the files in flight are decoded again one at a time)."""
        try:
            return self.pool.submit(decode_photo, item, self.settings)
        except BrokenProcessPool as e:
            future: Future = Future()
            future.set_exception(e)
            return future

    def restart(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        self.pool = self._new_pool()

    def isolate(self, item: MediaItem) -> Piece:
        """Decode one photo alone; a worker that dies on it is that file's failure."""
        for _ in range(2):
            try:
                future = self.pool.submit(decode_photo, item, self.settings)
            except BrokenProcessPool:  # broken before this file reached it: not this file's doing
                self.restart()
                continue
            try:
                return future.result()
            except BrokenProcessPool:
                self.restart()
                return failed(item, DIED)
        return failed(item, "the decoder processes keep dying (out of memory?)")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _stream_video(item: MediaItem, settings: DecodeSettings, out, nice: int, owner: int) -> None:
    """A video's decode process: its pieces, in order, into `out` (a bounded queue)."""
    _init_decode_process(nice, owner)
    for piece in decode_video(item, settings):
        out.put(piece)


class _VideoStream:
    """One video decoding in a process of its own (a thread with decoder="thread"), its pieces
    coming back through a queue of two: memory stays bounded however long the video is."""

    def __init__(self, kind: str, item: MediaItem, settings: DecodeSettings, nice: int):
        self.item, self.sent = item, 0
        if kind == "thread":
            self.queue: queue.Queue = queue.Queue(maxsize=2)
            self.worker = threading.Thread(
                target=self._thread, args=(settings, nice), daemon=True, name="pixquery-video-decode"
            )
        else:
            ctx = _context(settings)
            self.queue = ctx.Queue(maxsize=2)
            self.worker = ctx.Process(
                target=_stream_video,
                args=(item, settings, self.queue, nice, os.getpid()),
                daemon=True,
                name="pixquery-video-decode",
            )
        self.worker.start()

    def _thread(self, settings, nice):
        _lower_priority(nice)
        for piece in decode_video(self.item, settings):
            self.queue.put(piece)

    def next(self, stop: threading.Event) -> Piece:
        """The video's next piece (a final one always comes: the decoder dying makes one)."""
        while True:
            try:
                piece = self.queue.get(timeout=0.2)
                self.sent += piece.n
                return piece
            except queue.Empty:
                if stop.is_set():
                    raise _Stop from None
                if not self.worker.is_alive():
                    try:  # it may have put its last piece just before ending
                        return self.queue.get(timeout=0.5)
                    except queue.Empty:
                        pass
                    if not self.sent:
                        return failed(self.item, DIED)
                    return Piece(
                        self.item,
                        final=True,
                        problem="the decoder process died part way; the frames before that are indexed",
                        info={},
                    )

    def close(self) -> None:
        if isinstance(self.worker, threading.Thread):
            return  # a decode thread ends with its video (or when the run's queues are dropped)
        if self.worker.is_alive():
            self.worker.terminate()
        self.worker.join(timeout=5)


class _Stop(Exception):
    pass


class _Item:
    """An item being gathered on the calling thread: its regions and vectors so far."""

    def __init__(self):
        self.regions, self.vectors, self.last = [], [], None


def run_local(
    items: Sequence[MediaItem],
    encoder: Encoder,
    settings: DecodeSettings,
    write: Callable[[list[EmbeddedItem]], None],
    *,
    batch_size: int | None = 32,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    decoder: str | None = None,
    nice: int | None = None,
    window: int | None = None,
) -> PipelineStats:
    """Embed `items` and pass each batch of finished items, in input order, to `write` (called on
    the writer thread). Items that cannot be decoded are reported, never fatal; an exception from
    the encoder or from `write` stops the run and is raised here.

    on_progress(done, failed) and on_failure(path, reason) are called on this thread: progress
    after each batch and each failure, on_failure once per file that could not be used (or, for
    a video written in part, once with what went wrong). decoder: "process" (the default: a
    crashing codec cannot take the run down) or "thread". nice: how much lower the decoders' CPU
    priority is than the encoder's (default 10; 0 when they read text, `settings.ocr`). window: most items in flight at once (default:
    3 batches). batch_size None: the encoder's `preferred_batch_size` if it has one.
    """
    stats = PipelineStats()
    t0 = time.perf_counter()
    if not items:
        return stats
    if batch_size is None:
        batch_size = int(getattr(encoder, "preferred_batch_size", 32))
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    decoder = decoder or DEFAULT_DECODER
    if nice is None:
        nice = OCR_NICE if settings.ocr is not None else DEFAULT_NICE
    workers = workers or default_workers()
    window = max(window or default_window(batch_size, workers), batch_size + 1)
    stats.window = window

    slots = threading.Semaphore(window)
    held = [0]  # items in flight (submitted and not yet completely encoded)
    held_lock = threading.Lock()
    stop = threading.Event()
    ready: queue.Queue = (
        queue.Queue()
    )  # feeder -> this thread: ("batch", parts, pixels), ("failed", item, reason), ("error", e), None
    writes: queue.Queue = queue.Queue(maxsize=2)
    writer_error: list[BaseException] = []

    def take_slot(block: bool) -> bool:
        """One item more may be in flight. Blocking waits (checking `stop`) for the encoder to free one."""
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

    decoders = _Decoders(decoder, workers, nice, settings)
    streams: list[_VideoStream] = []

    def feeder():
        _lower_priority(nice)  # this thread only (Linux): cutting batches yields to the encoder
        parts: list[tuple[int, Piece, int, int]] = []  # (item's number, piece, first crop, end) of the batch being cut
        arrays: list[np.ndarray] = []
        filled = [0]

        def flush():
            if parts:
                pixels = np.concatenate(arrays) if arrays else np.zeros((0,), np.float32)
                ready.put(("batch", list(parts), pixels))
                parts.clear()
                arrays.clear()
                filled[0] = 0

        def take(seq: int, piece: Piece) -> None:
            if piece.failure is not None:
                give_slots(1)
                ready.put(("failed", piece.item, piece.failure))
                return
            at = 0
            while True:  # cut the piece's crops into batches of exactly batch_size
                n = min(piece.n - at, batch_size - filled[0])
                parts.append((seq, piece, at, at + n))
                if n:
                    arrays.append(piece.pixels[at : at + n])
                at += n
                filled[0] += n
                if filled[0] >= batch_size:
                    flush()
                if at >= piece.n:
                    return

        def stream(seq: int, video: _VideoStream) -> None:
            try:
                while True:
                    piece = video.next(stop)
                    take(seq, piece)
                    if piece.final:
                        return
            finally:
                video.close()

        try:
            pending: deque = deque()  # (item's number, item, Future | _VideoStream), in input order
            it = iter(enumerate(items))
            exhausted = False
            while not stop.is_set():
                # Keep the window full. Block for a slot only when no result waits to be taken
                # (results taken make batches, and encoded batches free slots).
                while not exhausted and take_slot(block=not pending):
                    seq, item = next(it, (None, None))
                    if item is None:
                        exhausted = True
                        give_slots(1)
                        break
                    if item.kind == VIDEO:
                        video = _VideoStream(decoder, item, settings, nice)
                        streams.append(video)
                        pending.append((seq, item, video))
                    else:
                        pending.append((seq, item, decoders.submit(item)))
                if stop.is_set() or not pending:
                    break
                seq, item, handle = pending.popleft()
                if isinstance(handle, _VideoStream):
                    stream(seq, handle)
                    continue
                try:
                    piece = handle.result()
                except BrokenProcessPool:
                    # A worker died. Decode the photos in flight again, one at a time, in a fresh
                    # pool: the file that kills its decoder again is the culprit.
                    decoders.restart()
                    redo = [(seq, item, None)] + list(pending)
                    pending.clear()
                    for n, again, h in redo:
                        if stop.is_set():
                            raise _Stop from None
                        if isinstance(h, _VideoStream):
                            stream(n, h)
                        else:
                            take(n, decoders.isolate(again))
                    continue
                take(seq, piece)
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
            batch = writes.get()
            if batch is None:
                return
            if writer_error:
                continue  # drain so the encoder never blocks
            try:
                write(batch)
            except BaseException as e:  # re-raised on the calling thread
                writer_error.append(e)
                stop.set()

    feed = threading.Thread(target=feeder, name="pixquery-feeder", daemon=True)
    writer = threading.Thread(target=writer_loop, name="pixquery-writer", daemon=True)
    feed.start()
    writer.start()
    done = nfailed = 0
    gathering: dict[int, _Item] = {}  # by the item's number in `items`
    try:
        # Create the encoder's session (and run it once) while the decoders fill the first batch:
        # ONNX Runtime's start-up (~0.8 s for ViT-B/32) then costs the run nothing.
        warm_up = getattr(encoder, "warm_up", None)
        if warm_up is not None:
            warm_up(("visual",))
        while True:
            tw = time.perf_counter()
            message = ready.get()
            stats.wait_decode_seconds += time.perf_counter() - tw
            if message is None or writer_error:
                break
            if message[0] == "error":
                raise message[1]
            if message[0] == "failed":
                _, item, reason = message
                nfailed += 1
                done += 1
                stats.failed.append((item.path, reason))
                if on_failure:
                    on_failure(item.path, reason)
                if on_progress:
                    on_progress(done, nfailed)
                continue
            _, parts, pixels = message
            te = time.perf_counter()
            vectors = encoder.encode_images(pixels) if len(pixels) else None
            stats.encode_seconds += time.perf_counter() - te
            stats.batches += 1
            stats.crops += len(pixels)
            finished: list[EmbeddedItem] = []
            at = 0
            for seq, piece, lo, hi in parts:
                g = gathering.setdefault(seq, _Item())
                g.regions.extend(piece.regions[lo:hi])
                if hi > lo:
                    g.vectors.append(vectors[at : at + hi - lo])
                    at += hi - lo
                if hi >= piece.n:
                    g.last = piece
                if g.last is not None and g.last.final and hi >= piece.n:
                    del gathering[seq]
                    last = g.last
                    vecs = (
                        np.concatenate(g.vectors)
                        if g.vectors
                        else np.zeros((0, getattr(encoder, "dim", 0)), np.float32)
                    )
                    finished.append(
                        EmbeddedItem(
                            last.item,
                            g.regions,
                            vecs,
                            sha256=last.sha256,
                            width=last.width,
                            height=last.height,
                            problem=last.problem,
                            info=last.info,
                            text=last.text,
                            text_seconds=last.text_seconds,
                        )
                    )
            give_slots(len(finished))
            if finished:
                tw = time.perf_counter()
                writes.put(finished)
                stats.wait_write_seconds += time.perf_counter() - tw
            for e in finished:
                if e.problem:
                    stats.problems.append((e.item.path, e.problem))
                    if on_failure:
                        on_failure(e.item.path, e.problem)
            stats.embedded += len(finished)
            done += len(finished)
            if on_progress and finished:
                on_progress(done, nfailed)
    finally:
        stop.set()
        if feed.is_alive():  # stopped early: cancel what is queued; a decode running ends soon
            decoders.pool.shutdown(wait=False, cancel_futures=True)
        feed.join()
        for video in streams:
            video.close()
        writes.put(None)
        writer.join()
        decoders.close()
        stats.decoder_restarts = decoders.restarts
    if writer_error:
        raise writer_error[0]
    stats.seconds = time.perf_counter() - t0
    return stats
