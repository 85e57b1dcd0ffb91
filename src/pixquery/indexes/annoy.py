"""Annoy random-projection forest (Spotify's annoy), the study's first index.

Parameters: `n_trees` (more: better recall, bigger file, slower build), `search_k` (nodes
inspected per query; -1 = annoy's default n_trees * k; a positive value is raised to at least
n_trees * k so that a large k still gets enough candidates).

Annoy is static: a built forest cannot take new items. `add` and `remove` only change the vectors
this object keeps and mark it stale; the forest is rebuilt from them on the next `search` or
`save` (so a batch of changes costs one rebuild). After a build or a load the vectors live only in
the annoy file; the first change after that reads them back (`get_item_vector`).

Annoy allocates storage for max(id) + 1 items, which is what made the study's index huge when it
used file ids. Here annoy items are always the dense positions 0..n-1 and `_ids[position]` is the
caller's id; the map is saved beside the forest. Annoy's angular distance d = sqrt(2 - 2 cos) is
converted back to cosine: cos = 1 - d^2 / 2. The forest is memory-mapped by annoy itself;
`load(mmap=False)` pre-faults the whole file into RAM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from pixquery.indexes.base import (
    as_ids,
    as_vectors,
    empty_results,
    load_npy,
    pad_results,
    read_bundle,
    save_npy,
    upsert_batch,
    write_bundle,
)


@dataclass
class Config:
    n_trees: int = 100
    search_k: int = -1  # -1: n_trees * k
    threads: int = -1  # build threads; -1 = all cores
    seed: int = 42

    def __post_init__(self):
        if self.n_trees < 1:
            raise ValueError("annoy needs n_trees >= 1")


class Index:
    kind = "annoy"

    def __init__(self, dim: int, config: Config | None = None):
        self.dim = int(dim)
        self.config = config or Config()
        self._ann: AnnoyIndex | None = None  # the built (or loaded) forest, None if stale
        self._ids = np.empty(0, np.int64)
        self._vectors: np.ndarray | None = np.empty((0, self.dim), np.float32)  # None: only in _ann
        self.build_seconds = 0.0

    def __len__(self) -> int:
        return len(self._ids)

    def params(self) -> dict:
        return asdict(self.config)

    # ------------------------------------------------------------------ changes
    def _materialise(self) -> np.ndarray:
        if self._vectors is None:
            ann = self._ann
            v = np.empty((len(self._ids), self.dim), np.float32)
            for i in range(len(self._ids)):
                v[i] = ann.get_item_vector(i)
            self._vectors = v
        return self._vectors

    def add(self, ids, vectors) -> None:
        ids, vectors = upsert_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        current = self._materialise()
        keep = ~np.isin(self._ids, ids) if len(self._ids) else np.ones(0, bool)
        self._vectors = (
            np.concatenate([current[keep], vectors]) if not keep.all() else np.concatenate([current, vectors])
        )
        self._ids = np.concatenate([self._ids[keep], ids])
        self._ann = None

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        if not len(ids) or not len(self._ids):
            return
        drop = np.isin(self._ids, ids)
        if not drop.any():
            return
        current = self._materialise()
        self._vectors = current[~drop]
        self._ids = self._ids[~drop]
        self._ann = None

    def build(self) -> None:
        """Build the forest now (otherwise done on the next search or save)."""
        import time

        if self._ann is not None or not len(self._ids):
            return
        t0 = time.perf_counter()
        ann = AnnoyIndex(self.dim, "angular")
        ann.set_seed(self.config.seed)
        for i, v in enumerate(self._vectors):
            ann.add_item(i, v)
        ann.build(self.config.n_trees, n_jobs=self.config.threads)
        self._ann = ann
        self._vectors = None  # annoy holds them now
        self.build_seconds = time.perf_counter() - t0

    def _ready(self) -> AnnoyIndex | None:
        if self._ann is None and len(self._ids):
            self.build()
        return self._ann

    # ------------------------------------------------------------------ searching
    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        ann = self._ready()
        if ann is None or not len(queries):
            return empty_results(len(queries), k)
        kk = min(k, len(self._ids))
        search_k = self.config.search_k
        if search_k > 0:
            search_k = max(search_k, self.config.n_trees * kk)
        scores, out = empty_results(len(queries), k)
        for r, q in enumerate(queries):
            items, dist = ann.get_nns_by_vector(q, kk, search_k=search_k, include_distances=True)
            n = len(items)
            if n:
                d = np.asarray(dist, np.float32)
                scores[r, :n] = 1.0 - d * d / 2.0
                out[r, :n] = self._ids[np.asarray(items, np.int64)]
        return pad_results(scores, out, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        ann = self._ready()
        parts = {"ids.npy": save_npy(self._ids)}
        if ann is not None:
            # annoy's save() writes the file and then maps it; the mapping survives the rename.
            parts["index.ann"] = lambda tmp: ann.save(str(tmp))
        write_bundle(path, self.kind, self.dim, self.params(), {"n": len(self._ids)}, parts)

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> Index:
        b = read_bundle(path, cls.kind)
        self = cls(b.dim, Config(**b.params))
        self._ids = np.array(load_npy(b.part("ids.npy")), dtype=np.int64)
        if b.has_part("index.ann"):
            ann = AnnoyIndex(b.dim, "angular")
            ann.load(str(b.part("index.ann")), prefault=not mmap)
            self._ann = ann
            self._vectors = None
        return self
