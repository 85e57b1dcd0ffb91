"""Many sub-indexes searched together: the study's "number of indexes".

The study split its 20,120 images into indexes of 16 ... 20,120 vectors and searched them all per
query; this kind reproduces that sweep for any inner kind and serves collections that are sharded
on purpose (e.g. one index per library folder).

Parameters: `inner` kind and `inner_params` (its own parameters, e.g. {"M": 16} for hnsw), and
either `shard_size` (fill shards in order; a new shard starts when the last one holds shard_size
vectors) or `shards` (a fixed number; id % shards picks the shard). Each query searches every
non-empty shard for k results and merges them (ties keep shard order). Shards are saved as nested
bundles beside the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pixquery.indexes.base import (
    as_ids,
    as_vectors,
    empty_results,
    load_npy,
    merge_results,
    read_bundle,
    save_npy,
    upsert_batch,
    write_bundle,
)


@dataclass
class Config:
    inner: str = "flat"
    shard_size: int = 0  # > 0: fill shards in order, this many vectors each
    shards: int = 0  # > 0: this many shards, id % shards picks one
    inner_params: dict = field(default_factory=dict)

    def __post_init__(self):
        from pixquery.indexes import make_config

        if self.inner in ("sharded", "auto"):
            raise ValueError(f"sharded cannot nest {self.inner!r}")
        if self.shard_size < 0 or self.shards < 0 or (self.shard_size and self.shards):
            raise ValueError("give sharded either shard_size or shards (> 0), not both")
        if not self.shard_size and not self.shards:
            self.shard_size = 10_000
        self.inner_params = dict(self.inner_params or {})
        make_config(self.inner, **self.inner_params)  # validates the inner parameters


class Index:
    kind = "sharded"

    def __init__(self, dim: int, config: Config | None = None):
        self.dim = int(dim)
        self.config = config or Config()
        self._shards: list = []
        self._ids: list[np.ndarray] = []  # ids held by each shard

    def _new_shard(self):
        from pixquery.indexes import make_index

        return make_index(self.config.inner, self.dim, **self.config.inner_params)

    def __len__(self) -> int:
        return int(sum(len(i) for i in self._ids))

    def params(self) -> dict:
        p = asdict(self.config)
        p["n_shards"] = len(self._shards)
        return p

    @property
    def shards(self) -> list:
        return list(self._shards)

    # ------------------------------------------------------------------ changes
    def add(self, ids, vectors) -> None:
        ids, vectors = upsert_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        if self.config.shards:
            while len(self._shards) < self.config.shards:
                self._shards.append(self._new_shard())
                self._ids.append(np.empty(0, np.int64))
            which = ids % self.config.shards
            for s in np.unique(which):
                m = which == s
                self._shards[s].add(ids[m], vectors[m])  # the shard itself replaces present ids
                self._ids[s] = np.union1d(self._ids[s], ids[m])
            return
        self.remove(ids)  # an id moves to the shard being filled
        start = 0
        while start < len(ids):
            if not self._shards or len(self._ids[-1]) >= self.config.shard_size:
                self._shards.append(self._new_shard())
                self._ids.append(np.empty(0, np.int64))
            room = self.config.shard_size - len(self._ids[-1])
            stop = min(len(ids), start + room)
            self._shards[-1].add(ids[start:stop], vectors[start:stop])
            self._ids[-1] = np.concatenate([self._ids[-1], ids[start:stop]])
            start = stop

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        if not len(ids):
            return
        for s, held in enumerate(self._ids):
            if not len(held):
                continue
            hit = np.isin(held, ids)
            if hit.any():
                self._shards[s].remove(held[hit])
                self._ids[s] = held[~hit]

    def build(self) -> None:
        """Build static shards (annoy) now rather than on the first search."""
        for s in self._shards:
            if hasattr(s, "build"):
                s.build()

    # ------------------------------------------------------------------ searching
    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        results = [s.search(queries, k) for s, held in zip(self._shards, self._ids) if len(held)]
        if not results or not len(queries):
            return empty_results(len(queries), k)
        if len(results) == 1:
            return results[0]
        return merge_results(results, k)

    def search_among(self, queries, k: int, allowed):
        """Each shard's filtered search, merged (indexes/filtered.py); None if a shard has none."""
        queries = as_vectors(queries, self.dim)
        k = int(k)
        shards = [s for s, held in zip(self._shards, self._ids) if len(held)]
        if not all(hasattr(s, "search_among") for s in shards):
            return None
        results = [s.search_among(queries, k, allowed) for s in shards]
        if any(r is None for r in results):
            return None
        if not results or not len(queries):
            return empty_results(len(queries), k)
        return results[0] if len(results) == 1 else merge_results(results, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        counts = [len(i) for i in self._ids]
        all_ids = np.concatenate(self._ids) if self._ids else np.empty(0, np.int64)
        bundles = {f"shard{i:05d}": (lambda p, s=s: s.save(p)) for i, s in enumerate(self._shards)}
        write_bundle(
            path,
            self.kind,
            self.dim,
            asdict(self.config),
            {"counts": counts},
            {"ids.npy": save_npy(all_ids)},
            bundles,
        )

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> Index:
        from pixquery.indexes import load_index

        b = read_bundle(path, cls.kind)
        self = cls(b.dim, Config(**b.params))
        all_ids = np.array(load_npy(b.part("ids.npy")), dtype=np.int64)
        offsets = np.cumsum([0] + list(b.state.get("counts", [])))
        for i, name in enumerate(sorted(b.bundle_names())):
            self._shards.append(load_index(self.config.inner, b.bundle(name), mmap=mmap))
            self._ids.append(all_ids[offsets[i] : offsets[i + 1]])
        return self
