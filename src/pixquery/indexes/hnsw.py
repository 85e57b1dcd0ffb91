"""HNSW graph index (hnswlib, or faiss's IndexHNSWFlat with `backend="faiss"`).

Parameters: `M` (links per node), `ef_construction` (build beam width), `ef_search` (query beam
width; default 256: recall@10 0.974 for text queries at 20k, docs/indexes.md). A query for k
results uses `ef = max(ef_search, ceil(ef_k_factor * k))`: the study's faiss default efSearch 16
found 13% of the true top-1000 in our benchmark, because a beam narrower than k cannot return k
good results; with `ef_k_factor` 1.5 asking for 1000 results searches with a beam of 1500.

Backends (`backend`, recorded in the saved index so that loading uses the one that wrote it):

* `hnswlib` (the default; the optional `ann` extra, `pip install 'pixquery[ann]'`).
* `faiss` (IndexHNSWFlat, always installed; `_faiss_hnsw.py`): what `auto` uses where hnswlib
  cannot be imported.

Why hnswlib by default and not faiss's IndexHNSWFlat (measured side by side, docs/indexes.md): the
same algorithm with similar recall and latency (faiss slightly better at k=10 for equal ef, hnswlib
faster at k=1000 and far less slowed down when the machine is busy), but only hnswlib supports
removal (`mark_deleted`, with the freed slots reused by later adds), growth (`resize_index`) and
updates in place; the faiss backend keeps removed and replaced vectors as tombstones that searches
skip and that later adds never reuse. hnswlib always loads the graph into RAM (`load(mmap=True)` is
accepted and reads it).

With hnswlib, ids are hnswlib labels (the caller's ids directly). Removed vectors stay in the graph,
marked deleted, until a later add reuses their slots; `params()["deleted"]` counts them.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pixquery.errors import PixqueryError
from pixquery.indexes.base import (
    as_ids,
    as_vectors,
    empty_results,
    pad_results,
    read_bundle,
    upsert_batch,
    write_bundle,
)

BACKENDS = ("hnswlib", "faiss")


def _hnswlib():
    try:
        import hnswlib
    except ImportError as e:
        from pixquery.indexes import missing_library

        raise missing_library("hnsw", "hnswlib", 'or use the hnsw parameter backend="faiss"') from e
    return hnswlib


def hnswlib_available() -> bool:
    try:
        _hnswlib()
    except PixqueryError:
        return False
    return True


@dataclass
class Config:
    M: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    ef_k_factor: float = 1.5  # the beam is at least ef_k_factor * k
    threads: int = 0  # build threads; 0 = all cores
    backend: str = "hnswlib"  # hnswlib | faiss

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"hnsw backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.backend == "hnswlib":
            _hnswlib()  # not installed: say so now (the library validates its config before any work)
        if self.M < 2 or self.ef_construction < 1 or self.ef_search < 1 or self.ef_k_factor < 1:
            raise ValueError("hnsw needs M >= 2, ef_construction >= 1, ef_search >= 1, ef_k_factor >= 1")


class Index:
    """The hnsw kind: makes or loads the index of the config's (or the saved file's) backend."""

    kind = "hnsw"

    def __new__(cls, dim: int, config: Config | None = None):
        config = config or Config()
        if config.backend == "faiss":
            from pixquery.indexes._faiss_hnsw import FaissHnswIndex

            return FaissHnswIndex(dim, config)
        return HnswlibIndex(dim, config)

    @classmethod
    def load(cls, path: Path, mmap: bool = False):
        b = read_bundle(path, cls.kind)
        config = Config(**b.params)  # files written before backends existed are hnswlib's
        if config.backend == "faiss":
            from pixquery.indexes._faiss_hnsw import FaissHnswIndex

            return FaissHnswIndex.from_bundle(b, config)
        return HnswlibIndex.from_bundle(b, config)


class HnswlibIndex:
    kind = "hnsw"

    def __init__(self, dim: int, config: Config | None = None, _graph=None, _state: dict | None = None):
        self.dim = int(dim)
        self.config = config or Config()
        self._lock = threading.Lock()  # hnswlib's ef is index-wide state: set it and search atomically
        if _graph is None:
            _graph = _hnswlib().Index(space="ip", dim=self.dim)
            _graph.init_index(
                max_elements=1024,
                M=self.config.M,
                ef_construction=self.config.ef_construction,
                random_seed=100,
                allow_replace_deleted=True,
            )
        self._g = _graph
        state = _state or {}
        self._deleted = int(state.get("deleted", 0))  # slots marked deleted, not yet reused
        self._max_label = int(state.get("max_label", -1))

    def __len__(self) -> int:
        return int(self._g.element_count) - self._deleted

    def params(self) -> dict:
        p = asdict(self.config)
        p["deleted"] = self._deleted
        return p

    def _threads(self, n: int) -> int:
        if n < 16:
            return 1
        return self.config.threads or os.cpu_count() or 1

    # ------------------------------------------------------------------ changes
    def add(self, ids, vectors) -> None:
        ids, vectors = upsert_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        new = np.ones(len(ids), bool)
        if ids.min() <= self._max_label:
            new = ~np.isin(ids, np.asarray(self._g.get_ids_list(), dtype=np.int64))
        with self._lock:
            if (~new).any():  # present (live or deleted): update in place
                for label in ids[~new].tolist():
                    try:
                        self._g.unmark_deleted(label)
                        self._deleted -= 1
                    except RuntimeError:  # it was live
                        pass
                self._g.add_items(vectors[~new], ids[~new], num_threads=self._threads(int((~new).sum())))
            if new.any():
                n_new = int(new.sum())
                reused = min(n_new, self._deleted)  # new labels take freed slots first
                need = int(self._g.element_count) + n_new - reused
                cap = int(self._g.get_max_elements())
                if need > cap:
                    self._g.resize_index(max(need, 2 * cap))
                self._g.add_items(vectors[new], ids[new], num_threads=self._threads(n_new), replace_deleted=True)
                self._deleted -= reused
        self._max_label = max(self._max_label, int(ids.max()))

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        with self._lock:
            for label in np.unique(ids).tolist():
                try:
                    self._g.mark_deleted(label)
                    self._deleted += 1
                except RuntimeError:  # not present, or already deleted
                    pass

    # ------------------------------------------------------------------ searching
    def ef_for(self, k: int) -> int:
        return max(self.config.ef_search, math.ceil(self.config.ef_k_factor * k))

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        live = len(self)
        if live == 0 or not len(queries):
            return empty_results(len(queries), k)
        kk = min(k, live)
        with self._lock:
            self._g.set_ef(self.ef_for(kk))
            try:
                labels, dist = self._g.knn_query(queries, k=kk, num_threads=self._threads(len(queries)))
            except RuntimeError:  # some query reached fewer than kk live vectors (many deletions)
                labels, dist = self._rowwise(queries, kk)
        return pad_results(1.0 - dist, labels.astype(np.int64), k)

    def _rowwise(self, queries: np.ndarray, k: int):
        """Slow path: widen the beam to the whole graph; failing that, pad with -1."""
        labels = np.full((len(queries), k), -1, np.int64)
        dist = np.full((len(queries), k), np.inf, np.float32)
        self._g.set_ef(max(self.ef_for(k), int(self._g.element_count)))
        for i, q in enumerate(queries):
            kk = k
            while kk > 0:
                try:
                    lab, d = self._g.knn_query(q[None], k=kk, num_threads=1)
                    labels[i, :kk], dist[i, :kk] = lab[0], d[0]
                    break
                except RuntimeError:
                    kk = kk // 2 if kk > 8 else kk - 1
        return labels, dist

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        def write(tmp: Path) -> None:
            with self._lock:
                self._g.save_index(str(tmp))

        state = {"deleted": self._deleted, "max_label": self._max_label}
        write_bundle(path, self.kind, self.dim, asdict(self.config), state, {"index.hnsw": write})

    @classmethod
    def from_bundle(cls, b, config: Config) -> HnswlibIndex:
        g = _hnswlib().Index(space="ip", dim=b.dim)
        g.load_index(str(b.part("index.hnsw")), max_elements=0, allow_replace_deleted=True)
        return cls(b.dim, config, _graph=g, _state=b.state)
