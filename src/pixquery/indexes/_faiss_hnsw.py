"""The `hnsw` kind on faiss's IndexHNSWFlat (`backend="faiss"`): the HNSW of a plain install.

hnswlib is the optional `ann` extra (it compiles from source); faiss is always installed, so this
is the HNSW that `auto` uses when hnswlib cannot be imported. Same parameters and the same beam
rule as the hnswlib backend (`ef = max(ef_search, ceil(ef_k_factor * k))`).

faiss HNSW cannot remove or replace a vector, so ids map to graph positions and a removed or
replaced vector stays in the graph as a tombstone (`_labels[position] == -1`): searches skip it with
an id selector, and `params()["deleted"]` counts the tombstones. Unlike hnswlib, later adds never
reuse those slots; `auto` asks for a rebuild once the collection has grown 4x.

The graph is always read into RAM (`load(mmap=True)` is accepted and reads it).
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np

from pixquery.indexes.base import (
    as_ids,
    as_vectors,
    empty_results,
    load_npy,
    pad_results,
    save_npy,
    upsert_batch,
    write_bundle,
)
from pixquery.indexes.threads import faiss_threads_for


class FaissHnswIndex:
    kind = "hnsw"

    def __init__(self, dim: int, config, _graph=None, _labels: np.ndarray | None = None):
        self.dim = int(dim)
        self.config = config
        self._lock = threading.Lock()  # faiss HNSW must not be searched while it grows
        if _graph is None:
            _graph = faiss.IndexHNSWFlat(self.dim, self.config.M, faiss.METRIC_INNER_PRODUCT)
            _graph.hnsw.efConstruction = self.config.ef_construction
        self._g = _graph
        # caller id of each graph position; -1 = removed or replaced (a tombstone)
        self._labels = np.empty(0, np.int64) if _labels is None else np.array(_labels, np.int64)
        live = self._labels >= 0
        self._pos = dict(zip(self._labels[live].tolist(), np.flatnonzero(live).tolist()))

    def __len__(self) -> int:
        return len(self._pos)

    @property
    def deleted(self) -> int:
        return len(self._labels) - len(self._pos)

    def params(self) -> dict:
        p = asdict(self.config)
        p["deleted"] = self.deleted
        return p

    # ------------------------------------------------------------------ changes
    def _tombstone(self, ids: np.ndarray) -> None:
        for label in ids.tolist():
            pos = self._pos.pop(label, None)
            if pos is not None:
                self._labels[pos] = -1

    def add(self, ids, vectors) -> None:
        ids, vectors = upsert_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        with self._lock:
            self._tombstone(ids)  # an id already present is replaced: its old vector is dropped
            start = len(self._labels)
            threads = self.config.threads or faiss.omp_get_max_threads()
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1 if len(ids) < 16 else threads)
            try:
                self._g.add(vectors)
            finally:
                faiss.omp_set_num_threads(before)
            self._labels = np.concatenate([self._labels, ids])
            self._pos.update(zip(ids.tolist(), range(start, start + len(ids))))

    def remove(self, ids) -> None:
        ids = np.unique(as_ids(ids))
        with self._lock:
            self._tombstone(ids)

    # ------------------------------------------------------------------ searching
    def ef_for(self, k: int) -> int:
        return max(self.config.ef_search, math.ceil(self.config.ef_k_factor * k))

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        with self._lock:
            live = len(self)
            if live == 0 or not len(queries):
                return empty_results(len(queries), k)
            kk = min(k, live)
            labels = self._labels
            bitmap = np.packbits(labels >= 0, bitorder="little") if self.deleted else None

            def run(q: np.ndarray, ef: int):
                sel = None if bitmap is None else faiss.IDSelectorBitmap(len(labels), faiss.swig_ptr(bitmap))
                params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
                with faiss_threads_for(len(q)):
                    return self._g.search(q, kk, params=params)

            scores, pos = run(queries, self.ef_for(kk))
            short = (pos < 0).any(axis=1)
            if short.any():  # tombstones cut some queries off from enough live vectors: widen the beam
                s2, p2 = run(queries[short], max(self.ef_for(kk), len(labels)))
                scores[short], pos[short] = s2, p2
            found = np.where(pos >= 0, labels[np.maximum(pos, 0)], -1)
        return pad_results(scores, found, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        def write_graph(tmp: Path) -> None:
            faiss.write_index(self._g, str(tmp))

        with self._lock:  # graph and labels from the same moment
            write_bundle(
                path,
                self.kind,
                self.dim,
                asdict(self.config),
                {},
                {"index.faiss": write_graph, "labels.npy": save_npy(self._labels)},
            )

    @classmethod
    def from_bundle(cls, b, config) -> FaissHnswIndex:
        """Read a saved index (hnsw.Index.load reads the manifest and picks the backend)."""
        graph = faiss.read_index(str(b.part("index.faiss")))
        return cls(b.dim, config, _graph=graph, _labels=load_npy(b.part("labels.npy")))
