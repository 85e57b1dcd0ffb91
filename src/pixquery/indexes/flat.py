"""Brute-force inner-product search (faiss): every vector is scored for every query.

`storage` trades memory and speed for accuracy:

* `float32`: exact (the study's Flat). 2 KiB per 512-d vector; at 1M vectors one query reads
  2 GB and is bound by memory bandwidth.
* `float16`: 2x smaller, scores within ~1e-3; faster than float32 once the data outgrows the cache.
* `int8`: scalar quantised (SQ8, one byte per dimension), ranges learned per dimension from the
  first vectors added (CLIP coordinates span ~+-0.15, not +-1, so a fixed range would waste 3 bits).
* `pq4`: 4-bit product-quantiser codes scanned with SIMD lookup tables (faiss "fast scan"),
  `pq_m` codes per vector (default: one per dimension, 256 bytes at 512-d). Approximate on its own;
  with `rerank` it is the fastest exhaustive search measured here (see docs/indexes.md).

`rerank > 0` keeps a float32 copy of every vector and re-scores the best
`max(rerank * k, rerank_min)` candidates exactly, so the returned scores are exact cosines.
It defaults to 2 for `pq4` and 0 (off) for the other storages.

Ids: the faiss index holds vectors by position; `_ids[position]` is the caller's id. (faiss's own
IndexIDMap2 cannot remove from a re-ranked index.) Quantised storages are trained on the first
add; if it holds fewer than 1000 vectors, int8 uses the fixed range [-1, 1] and pq4 trains on noisy
copies, so build from the whole collection (`build_index`) and rebuild with `reindex`.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from pixquery.indexes import _faiss
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

STORAGES = ("float32", "float16", "int8", "pq4")
TRAIN_MIN = 1000  # vectors needed to learn int8 ranges / pq4 codebooks well
TRAIN_MAX = 65536  # sample size used for training int8 ranges
TRAIN_MAX_PQ = 16384  # and pq4 codebooks (16 centroids per sub-space need few points)


@dataclass
class Config:
    storage: str = "float32"  # float32 | float16 | int8 | pq4
    rerank: float | None = None  # re-rank max(rerank*k, rerank_min) candidates exactly; None: 2 for pq4 else 0
    rerank_min: int = 200
    pq_m: int = 0  # pq4 only: 4-bit codes per vector; 0 = one per dimension

    def __post_init__(self):
        if self.storage not in STORAGES:
            raise ValueError(f"flat storage must be one of {', '.join(STORAGES)}, not {self.storage!r}")
        if self.rerank is None:
            self.rerank = 2.0 if self.storage == "pq4" else 0.0
        self.rerank = float(self.rerank)
        if self.rerank < 0 or self.rerank_min < 0 or self.pq_m < 0:
            raise ValueError("rerank, rerank_min and pq_m must be >= 0")
        if self.storage == "float32" and self.rerank:
            self.rerank = 0.0  # already exact


def _factory_string(dim: int, cfg: Config) -> str:
    if cfg.storage == "float32":
        return "Flat"
    if cfg.storage == "float16":
        base = "SQfp16"
    elif cfg.storage == "int8":
        base = "SQ8"
    else:
        m = cfg.pq_m or dim
        if dim % m:
            raise ValueError(f"pq_m={m} must divide the dimension {dim}")
        base = f"PQ{m}x4fs"
    return base + (",RFlat" if cfg.rerank > 0 else "")


class Index:
    kind = "flat"

    def __init__(self, dim: int, config: Config | None = None):
        self.dim = int(dim)
        self.config = config or Config()
        self._factory = _factory_string(self.dim, self.config)
        self._fx: _faiss.MappedFaiss | None = None  # created (and trained) on the first add
        self._ids = np.empty(0, np.int64)
        self._max_id = -1  # every present id is <= this: adds of larger ids skip the duplicate check
        if not self._needs_training():
            self._fx = _faiss.MappedFaiss(self._new_index())

    # ------------------------------------------------------------------ building
    def _needs_training(self) -> bool:
        return self.config.storage in ("int8", "pq4")

    def _new_index(self):
        return faiss.index_factory(self.dim, self._factory, faiss.METRIC_INNER_PRODUCT)

    def _train(self, vectors: np.ndarray):
        index = self._new_index()
        base = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else index
        if self.config.storage == "int8":
            if len(vectors) >= TRAIN_MIN:
                base.sq.rangestat = faiss.ScalarQuantizer.RS_minmax
                base.sq.rangestat_arg = 0.1  # 10% margin for vectors added later
                sample = _faiss.training_sample(vectors, TRAIN_MAX)
            else:  # too few to learn ranges: unit vectors lie in [-1, 1]
                sample = np.vstack([np.full((1, self.dim), -1.0, "f4"), np.full((1, self.dim), 1.0, "f4")])
        else:
            sample = _faiss.training_sample(vectors, TRAIN_MAX_PQ, n_min=TRAIN_MIN)
        index.train(sample)
        return index

    def __len__(self) -> int:
        return len(self._ids)

    def params(self) -> dict:
        p = asdict(self.config)
        if self.config.storage == "pq4":
            p["pq_m"] = self.config.pq_m or self.dim
        return p

    def add(self, ids, vectors) -> None:
        ids, vectors = upsert_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        if len(self._ids) and ids.min() <= self._max_id:
            present = np.isin(ids, self._ids)
            if present.any():
                self.remove(ids[present])
        if self._fx is None:
            self._fx = _faiss.MappedFaiss(self._train(vectors))
        index = self._fx.owned()
        with _faiss.faiss_threads_for(len(vectors)):
            index.add(vectors)
        self._ids = np.concatenate([self._ids, ids])
        self._max_id = max(self._max_id, int(ids.max()))

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        if not len(ids) or not len(self._ids):
            return
        pos = np.flatnonzero(np.isin(self._ids, ids))
        if not len(pos):
            return
        index = self._fx.owned()
        sel = faiss.IDSelectorBatch(pos.astype(np.int64))
        if isinstance(index, faiss.IndexRefine):  # IndexRefine has no remove_ids: do both halves
            faiss.downcast_index(index.base_index).remove_ids(sel)
            faiss.downcast_index(index.refine_index).remove_ids(sel)
            index.ntotal = index.base_index.ntotal
        else:
            index.remove_ids(sel)
        self._ids = np.delete(self._ids, pos)

    # ------------------------------------------------------------------ searching
    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        n = len(self._ids)
        if n == 0 or not len(queries):
            return empty_results(len(queries), k)
        kk = min(k, n)
        index = self._fx.index
        params = None
        if isinstance(index, faiss.IndexRefine):
            params = faiss.IndexRefineSearchParameters()
            params.k_factor = float(max(self.config.rerank, self.config.rerank_min / kk, 1.0))
        scores, pos = _faiss.search(index, queries, kk, params)
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
        return pad_results(scores, ids, k)

    def search_among(self, queries, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Search only the ids `allowed` (a boolean array by id) marks: faiss skips the others
        before scoring them (IDSelectorBitmap over positions). None where the storage cannot
        (pq4 fast scan): the caller searches wider instead (indexes/filtered.py)."""
        from pixquery.indexes.filtered import bitmap_selector, mask_of_labels

        queries = as_vectors(queries, self.dim)
        k = int(k)
        n = len(self._ids)
        if n == 0 or not len(queries):
            return empty_results(len(queries), k)
        by_pos = mask_of_labels(allowed, self._ids)
        kk = min(k, max(1, int(by_pos.sum())))
        sel, _bits = bitmap_selector(by_pos)
        index = self._fx.index
        if isinstance(index, faiss.IndexRefine):
            base = faiss.SearchParameters(sel=sel)
            params = faiss.IndexRefineSearchParameters(base_index_params=base)
            params.k_factor = float(max(self.config.rerank, self.config.rerank_min / kk, 1.0))
        else:
            params = faiss.SearchParameters(sel=sel)
        try:
            scores, pos = _faiss.search(index, queries, kk, params)
        except RuntimeError:  # "does not support search params with a selector"
            return None
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
        return pad_results(scores, ids, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        parts = {"ids.npy": save_npy(self._ids)}
        if self._fx is not None:
            parts["index.faiss"] = _write_faiss(self._fx)
        write_bundle(path, self.kind, self.dim, self.params(), {"factory": self._factory}, parts)

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> Index:
        path = Path(path)
        if path.is_file():  # pixquery 0.1 saved a bare faiss file
            return cls._load_bare_faiss(path, mmap)
        b = read_bundle(path, cls.kind)
        params = dict(b.params)
        if params.get("storage") == "pq4" and params.get("pq_m") == b.dim:
            params["pq_m"] = 0
        self = cls(b.dim, Config(**params))
        self._ids = load_npy(b.part("ids.npy"), mmap=mmap)
        self._max_id = int(self._ids.max()) if len(self._ids) else -1
        if b.has_part("index.faiss"):
            self._fx = _faiss.MappedFaiss.read(b.part("index.faiss"), mmap)
        return self

    @classmethod
    def _load_bare_faiss(cls, path: Path, mmap: bool) -> Index:
        """A file written by pixquery 0.1 (a faiss IndexIDMap2 over Flat or SQ)."""
        idx = faiss.read_index(str(path))
        inner = faiss.downcast_index(idx.index)
        storage = "float32"
        if isinstance(inner, faiss.IndexScalarQuantizer):
            storage = "float16" if inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16 else "int8"
        self = cls(idx.d, Config(storage=storage))
        self._ids = faiss.vector_to_array(idx.id_map).astype(np.int64)
        idx.own_fields = False
        self._fx = _faiss.MappedFaiss(inner)
        self._keep = idx  # owns nothing now, but keep it alive with the inner index
        self._max_id = int(self._ids.max()) if len(self._ids) else -1
        return self


def _write_faiss(fx: _faiss.MappedFaiss):
    def write(tmp: Path) -> None:
        if fx.mapped:  # unchanged since load: copy the file it maps (faiss would write a reference)
            src = f"/proc/self/fd/{fx._fd}"
            with open(src, "rb") as s, open(tmp, "wb") as d:
                shutil.copyfileobj(s, d, 16 << 20)
        else:
            faiss.write_index(fx.index, str(tmp))

    return write
