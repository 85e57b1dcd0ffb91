"""Helpers shared by the faiss kinds (flat, ivf): id maps, memory-mapped parts, training samples."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from pixquery.indexes.threads import faiss_threads_for


class MappedFaiss:
    """A faiss index read from a part file, maybe memory-mapped.

    faiss aborts the whole process (not an exception) when one adds to a mapped flat index, and
    a mapped IVF index would write into the saved file. So before any change, `owned()` re-reads
    the file into private memory. The file stays open, so this works even after a newer save has
    deleted it.
    """

    def __init__(self, index, path: Path | None = None, mapped: bool = False):
        self.index = index
        self.mapped = mapped
        self._fd = None
        if mapped and path is not None:
            self._fd = os.open(path, os.O_RDONLY)
            self._path = Path(path)

    @classmethod
    def read(cls, path: Path, mmap: bool) -> MappedFaiss:
        if mmap:
            # IO_FLAG_MMAP_IFC maps flat codes and IVF lists; IO_FLAG_MMAP alone copies flat codes.
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
            return cls(index, path, mapped=True)
        return cls(faiss.read_index(str(path)))

    def owned(self):
        if self.mapped:
            src = f"/proc/self/fd/{self._fd}" if os.path.exists(f"/proc/self/fd/{self._fd}") else str(self._path)
            self.index = faiss.read_index(src)
            self.mapped = False
            self.close()
        return self.index

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def training_sample(vectors: np.ndarray, n_max: int, n_min: int = 0, seed: int = 0) -> np.ndarray:
    """A random sample of at most n_max rows; if there are fewer than n_min rows, noisy copies
    are added (k-means needs at least as many points as centroids)."""
    rng = np.random.default_rng(seed)
    x = vectors
    if len(x) > n_max:
        x = x[np.sort(rng.choice(len(x), size=n_max, replace=False))]
    if len(x) < n_min:
        reps = int(np.ceil(n_min / max(1, len(x))))
        x = np.repeat(x, reps, axis=0)[:n_min]
        x = x + rng.normal(0, 0.01, size=x.shape).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def search(index, queries: np.ndarray, k: int, params=None):
    with faiss_threads_for(len(queries)):
        if params is None:
            return index.search(queries, k)
        return index.search(queries, k, params=params)
