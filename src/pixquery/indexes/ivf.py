"""Inverted-file index (faiss IVF): k-means cells, a query scans the `nprobe` nearest cells.

Parameters: `nlist` cells (0 = chosen at training: 8 * sqrt(n) rounded to a power of two; never
more than n / 39 for the n vectors it is trained on), `nprobe` cells scanned per query,
`quantizer` the precision the centroids are kept in (float16 default), `storage` of the vectors in the cells:

* `float32` (alias `flat`): exact scores within the scanned cells; 2 KiB per 512-d vector.
* `float16` (alias `fp16`): half the memory, scores within ~1e-3. The default: at 1M vectors
  it fits the 1.1 GB budget of the issue.
* `int8` (alias `sq8`): a quarter, ranges learned per dimension.
* `pq`: product quantisation, `pq_m` bytes per vector (default dim / 8); approximate on its own
  (recall@10 caps near 0.5 on CLIP-like data), so it re-ranks by default.
* `pq4`: 4-bit PQ scanned with SIMD lookup tables ("fast scan"), `pq_m` codes (default dim / 4).

`rerank > 0` keeps a copy of every vector in `rerank_storage` (float32 exact, or float16) and
re-scores the best `max(rerank * k, rerank_min)` candidates with it.

Training: on the first `add`, on a random sample of `train_size` vectors (default
32 per cell, at least 10,000 where available), `niter` k-means iterations. Build from the whole collection
(`build_index`) so that the cells fit the data; later adds reuse the cells (`reindex` re-trains).

Ids: faiss labels are positions; `_ids[position]` is the caller's id (-1 once removed). Removed
vectors leave the cells at once; with re-ranking their copy is garbage until the next compaction
(automatic when garbage exceeds half the live vectors).
"""

from __future__ import annotations

import math
import shutil
import time
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

STORAGES = ("float32", "float16", "int8", "pq", "pq4")
ALIASES = {"flat": "float32", "fp16": "float16", "sq8": "int8", "fp32": "float32"}


@dataclass
class Config:
    nlist: int = 0  # 0: 4*sqrt(n) rounded to a power of two, chosen when trained
    nprobe: int = 32
    storage: str = "float16"  # float32 | float16 | int8 | pq | pq4 (aliases flat, fp16, sq8)
    pq_m: int = 0  # pq: bytes per vector (0: dim/8); pq4: 4-bit codes per vector (0: dim/4)
    rerank: float | None = None  # re-rank max(rerank*k, rerank_min) candidates; None: 2 for pq/pq4 else 0
    rerank_min: int = 200
    rerank_storage: str = "float32"  # float32 | float16
    train_size: int = 0  # 0: 32 per cell, at least 10,000
    niter: int = 10
    quantizer: str = "float16"  # the centroids: float32 | float16 (half the per-query scan of them)

    def __post_init__(self):
        self.storage = ALIASES.get(self.storage, self.storage)
        self.rerank_storage = ALIASES.get(self.rerank_storage, self.rerank_storage)
        if self.storage not in STORAGES:
            raise ValueError(f"ivf storage must be one of {', '.join(STORAGES)}, not {self.storage!r}")
        if self.rerank_storage not in ("float32", "float16"):
            raise ValueError("ivf rerank_storage must be float32 or float16")
        self.quantizer = ALIASES.get(self.quantizer, self.quantizer)
        if self.quantizer not in ("float32", "float16"):
            raise ValueError("ivf quantizer must be float32 or float16")
        if self.rerank is None:
            self.rerank = 2.0 if self.storage in ("pq", "pq4") else 0.0
        self.rerank = float(self.rerank)
        if self.nlist < 0 or self.nprobe < 1 or self.rerank < 0 or self.niter < 1:
            raise ValueError("ivf needs nlist >= 0, nprobe >= 1, rerank >= 0, niter >= 1")


def auto_nlist(n: int) -> int:
    """8 sqrt(n) cells, a power of two: 8192 at 1M. Text queries land far from the image vectors,
    and finer cells need far fewer probes for them: at 1M, recall@10 at 1.6% of the collection
    scanned was 0.77 / 0.93 / 0.98 with 2048 / 4096 / 8192 cells (docs/indexes.md)."""
    if n < 78:
        return 1
    nlist = 2 ** round(math.log2(8 * math.sqrt(n)))
    return int(max(1, min(nlist, n // 39)))


class Index:
    kind = "ivf"

    def __init__(self, dim: int, config: Config | None = None):
        self.dim = int(dim)
        self.config = config or Config()
        self._fx: _faiss.MappedFaiss | None = None  # None until trained (first add)
        self._ids = np.empty(0, np.int64)  # by position; -1 = removed
        self._live = 0
        self._max_id = -1
        self.train_seconds = 0.0

    # ------------------------------------------------------------------ building
    def _pq_m(self) -> int:
        m = self.config.pq_m or (self.dim // 8 if self.config.storage == "pq" else self.dim // 4)
        if self.dim % m:
            raise ValueError(f"pq_m={m} must divide the dimension {self.dim}")
        return m

    def _new_index(self, nlist: int):
        c = self.config
        quantizer = faiss.IndexFlatIP(self.dim)
        ip = faiss.METRIC_INNER_PRODUCT
        if c.storage == "float32":
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, ip)
        elif c.storage in ("float16", "int8"):
            qt = faiss.ScalarQuantizer.QT_fp16 if c.storage == "float16" else faiss.ScalarQuantizer.QT_8bit
            ivf = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, qt, ip)
        elif c.storage == "pq":
            ivf = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self._pq_m(), 8, ip)
        else:
            ivf = faiss.IndexIVFPQFastScan(quantizer, self.dim, nlist, self._pq_m(), 4, ip)
        ivf.own_fields = True
        quantizer.this.disown()
        ivf.cp.niter = c.niter
        ivf.cp.seed = 1234
        ivf.cp.min_points_per_centroid = 1  # the sample size is chosen above; no warning
        if c.rerank <= 0:
            return ivf
        if c.rerank_storage == "float32":
            store = faiss.IndexFlatIP(self.dim)
        else:
            store = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, ip)
        index = faiss.IndexRefine(ivf, store)
        index.own_fields = True
        index.own_refine_index = True
        ivf.this.disown()
        store.this.disown()
        return index

    def _train(self, vectors: np.ndarray):
        t0 = time.perf_counter()
        # k-means needs ~39 points per cell: fewer vectors than that get fewer cells (recorded)
        nlist = min(self.config.nlist or auto_nlist(len(vectors)), max(1, len(vectors) // 39))
        self.config.nlist = nlist
        index = self._new_index(nlist)
        n_train = self.config.train_size or max(32 * nlist, 10_000)
        min_train = max(nlist, 256 if self.config.storage in ("pq", "pq4") else 1)
        sample = _faiss.training_sample(vectors, n_train, n_min=min_train)
        with _faiss.faiss_threads_for(len(sample)):
            index.train(sample)
        if self.config.quantizer == "float16":
            self._half_quantizer(faiss.extract_index_ivf(index))
        self.train_seconds = time.perf_counter() - t0
        return index

    @staticmethod
    def _half_quantizer(ivf) -> None:
        """Keep the trained centroids in float16: every query scans them all (16 MB for 8192 cells
        in float32, ~0.8 ms of memory traffic), and halving that is free in recall."""
        old = ivf.quantizer
        centroids = old.reconstruct_n(0, old.ntotal)
        half = faiss.IndexScalarQuantizer(ivf.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        half.add(centroids)
        half.this.disown()  # the IVF owns it (own_fields)
        ivf.quantizer = half
        old.this.acquire()  # and Python frees the float32 one
        del old

    def _parts(self, index):
        """(ivf, refine store or None)"""
        if isinstance(index, faiss.IndexRefine):
            return faiss.extract_index_ivf(index.base_index), faiss.downcast_index(index.refine_index)
        return faiss.extract_index_ivf(index), None

    def __len__(self) -> int:
        return self._live

    def params(self) -> dict:
        p = asdict(self.config)
        if self.config.storage in ("pq", "pq4"):
            p["pq_m"] = self._pq_m()
        return p

    def add(self, ids, vectors) -> None:
        ids, vectors = upsert_batch(ids, vectors, self.dim)
        if not len(ids):
            return
        if self._live and ids.min() <= self._max_id:
            present = np.isin(ids, self._ids)
            if present.any():
                self.remove(ids[present])
        if self._fx is None:
            self._fx = _faiss.MappedFaiss(self._train(vectors))
        index = self._fx.owned()
        ivf, store = self._parts(index)
        pos = np.arange(len(self._ids), len(self._ids) + len(ids), dtype=np.int64)
        with _faiss.faiss_threads_for(len(vectors)):
            ivf.add_with_ids(vectors, pos)
            if store is not None:
                store.add(vectors)
                index.ntotal = store.ntotal
        self._ids = np.concatenate([self._ids, ids])
        self._live += len(ids)
        self._max_id = max(self._max_id, int(ids.max()))

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        if not len(ids) or not self._live:
            return
        pos = np.flatnonzero(np.isin(self._ids, ids))
        if not len(pos):
            return
        index = self._fx.owned()
        ivf, store = self._parts(index)
        ivf.remove_ids(faiss.IDSelectorBatch(pos.astype(np.int64)))
        if not isinstance(self._ids, np.ndarray) or not self._ids.flags.writeable:
            self._ids = np.array(self._ids)
        self._ids[pos] = -1
        self._live -= len(pos)
        garbage = len(self._ids) - self._live
        if store is not None and garbage > max(1000, self._live // 2):
            self._compact()

    def _compact(self) -> None:
        """Re-add the live vectors (from the re-rank copy) to drop removed ones; no re-training."""
        index = self._fx.owned()
        ivf, store = self._parts(index)
        live = np.flatnonzero(self._ids >= 0)
        vectors = store.reconstruct_batch(live) if len(live) else np.empty((0, self.dim), np.float32)
        ids = self._ids[live]
        ivf.reset()
        store.reset()
        index.ntotal = 0
        self._ids = np.empty(0, np.int64)
        self._live = 0
        if len(ids):
            self.add(ids, vectors)

    # ------------------------------------------------------------------ searching
    def search_params(self, k: int, nprobe: int | None = None, rerank: float | None = None):
        """(params for faiss, the nested IVF params, which must stay alive as long)."""
        index = self._fx.index
        sp = faiss.SearchParametersIVF()
        sp.nprobe = int(min(nprobe or self.config.nprobe, self.config.nlist or 1))
        if not isinstance(index, faiss.IndexRefine):
            return sp, sp
        p = faiss.IndexRefineSearchParameters()
        r = self.config.rerank if rerank is None else rerank
        p.k_factor = float(max(r, self.config.rerank_min / k, 1.0))
        p.base_index_params = sp
        return p, sp

    def search(self, queries, k: int, nprobe: int | None = None, rerank: float | None = None):
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        if not self._live or not len(queries):
            return empty_results(len(queries), k)
        kk = min(k, self._live)
        params, _keep = self.search_params(kk, nprobe, rerank)
        scores, pos = _faiss.search(self._fx.index, queries, kk, params)
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
        return pad_results(scores, ids, k)

    def search_among(self, queries, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Search only the ids `allowed` (a boolean array by id) marks. With a fraction s of the
        vectors allowed, nprobe / s cells are scanned (all of them at most), so about as many
        allowed vectors are scored as an unfiltered search scores; the others are skipped before
        scoring (IDSelectorBitmap). None where the storage cannot take a selector."""
        from pixquery.indexes.filtered import bitmap_selector, mask_of_labels

        queries = as_vectors(queries, self.dim)
        k = int(k)
        if not self._live or not len(queries):
            return empty_results(len(queries), k)
        by_pos = mask_of_labels(allowed, self._ids)
        n_allowed = int(by_pos.sum())
        if not n_allowed:
            return empty_results(len(queries), k)
        kk = min(k, n_allowed)
        nlist = self._parts(self._fx.index)[0].nlist
        nprobe = min(nlist, math.ceil(self.config.nprobe * self._live / n_allowed))
        params, sp = self.search_params(kk, nprobe)
        sp.nprobe = nprobe
        sel, _bits = bitmap_selector(by_pos)
        sp.sel = sel
        try:
            scores, pos = _faiss.search(self._fx.index, queries, kk, params)
        except RuntimeError:
            return None
        ids = np.where(pos >= 0, self._ids[np.clip(pos, 0, None)], -1)
        return pad_results(scores, ids, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        parts = {"ids.npy": save_npy(np.asarray(self._ids))}
        if self._fx is not None:
            fx = self._fx

            def write(tmp: Path) -> None:
                if fx.mapped:  # unchanged since load: copy the mapped file
                    with open(f"/proc/self/fd/{fx._fd}", "rb") as s, open(tmp, "wb") as d:
                        shutil.copyfileobj(s, d, 16 << 20)
                else:
                    faiss.write_index(fx.index, str(tmp))

            parts["index.faiss"] = write
        state = {"live": self._live}
        write_bundle(path, self.kind, self.dim, self.params(), state, parts)

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> Index:
        b = read_bundle(path, cls.kind)
        self = cls(b.dim, Config(**b.params))
        self._ids = load_npy(b.part("ids.npy"), mmap=mmap)
        self._live = int(b.state.get("live", int((np.asarray(self._ids) >= 0).sum())))
        self._max_id = int(np.max(self._ids)) if len(self._ids) else -1
        if b.has_part("index.faiss"):
            self._fx = _faiss.MappedFaiss.read(b.part("index.faiss"), mmap)
        return self
