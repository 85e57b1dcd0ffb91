"""Embeddings kept in memory: recent uploads by id (`UploadCache`), recent text queries (`TextEncoder`)."""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future

import numpy as np


class UploadCache:
    """Embeddings of recent uploads, by id, so that later pages need no second upload."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, vector: np.ndarray) -> None:
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            v = self._items.get(key)
            if v is not None:
                self._items.move_to_end(key)
            return v


class TextEncoder:
    """Text queries -> embeddings, with an LRU of recent queries in front of the encoder.

    A cached query (paging, a query asked again) is answered at once. With `batch` > 1 the others
    go to one worker thread that takes every query waiting at that moment (up to `batch`) and
    encodes them in one call; when idle a query waits for nobody (no timer). Batching uses less
    CPU per query in a sequential micro-benchmark, but showed no gain in the loopback load test
    on a busy 2-core machine (bench/results/serve-load.md), so the default is 1: each request
    thread calls the (thread-safe) encoder itself.
    """

    def __init__(self, encoder, cache_size: int = 1024, batch: int = 16):
        self.encoder = encoder
        self.batch = max(1, int(batch))
        self.cache = UploadCache(cache_size)  # an LRU keyed by the query text
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.calls = 0  # encoder calls made (for tests and the load test)

    def encode(self, text: str) -> np.ndarray:
        hit = self.cache.get(text)
        if hit is not None:
            return hit
        if self.batch == 1:
            vector = self.encoder.encode_texts([text])[0]
            self.calls += 1
        else:
            future: Future = Future()
            self._ensure_worker()
            self._queue.put((text, future))
            vector = future.result()
        self.cache.put(text, vector)
        return vector

    def _ensure_worker(self) -> None:
        if self._worker is None:
            with self._start_lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run, name="pixquery-text-encoder", daemon=True)
                    self._worker.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self.encoder.encode_texts([t for t, _ in batch])
                self.calls += 1
                for (_, future), v in zip(batch, vectors):
                    future.set_result(v)
            except BaseException as e:  # the waiting requests get the error; the worker lives on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
