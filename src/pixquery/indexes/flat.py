"""Exact inner-product search (faiss Flat), the study's best index overall.

Wrapped in IndexIDMap2 because a bare Flat index renumbers its vectors on removal; the map keeps
the caller's ids stable. Storage can be float32 (exact), float16 or int8 (scalar quantised, SQ8)
to trade a little accuracy for 2x / 4x less memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from pixquery.indexes.base import atomic_path
from pixquery.indexes.threads import faiss_threads_for

_STORAGE = {"float32": None, "float16": faiss.ScalarQuantizer.QT_fp16, "int8": faiss.ScalarQuantizer.QT_8bit}


@dataclass
class Config:
    storage: str = "float32"  # float32 | float16 | int8

    def __post_init__(self):
        if self.storage not in _STORAGE:
            raise ValueError(f"flat storage must be one of {sorted(_STORAGE)}, not {self.storage!r}")


class Index:
    kind = "flat"

    def __init__(self, dim: int, config: Config | None = None, _faiss_index=None):
        self.dim = dim
        self.config = config or Config()
        if _faiss_index is None:
            qt = _STORAGE[self.config.storage]
            if qt is None:
                base = faiss.IndexFlatIP(dim)
            else:
                base = faiss.IndexScalarQuantizer(dim, qt, faiss.METRIC_INNER_PRODUCT)
                if self.config.storage == "int8":
                    # SQ8 needs per-dimension ranges; CLIP vectors are unit-norm so each
                    # coordinate lies in [-1, 1]. A fixed range avoids a training pass.
                    base.sq.rangestat = faiss.ScalarQuantizer.RS_minmax
                    base.train(np.vstack([np.full((1, dim), -1.0, "float32"), np.full((1, dim), 1.0, "float32")]))
            _faiss_index = faiss.IndexIDMap2(base)
        self._index = _faiss_index

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def params(self) -> dict:
        return asdict(self.config)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids):
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids):
            self._index.remove_ids(faiss.IDSelectorBatch(ids))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(int(k), max(len(self), 1)))
        with faiss_threads_for(len(queries)):
            scores, ids = self._index.search(queries, k)
        return scores, ids

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> "Index":
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0  # MMAP_IFC really maps; IO_FLAG_MMAP copies
        idx = faiss.read_index(str(path), flags)
        base = faiss.downcast_index(idx.index)
        storage = "float32"
        if isinstance(base, faiss.IndexScalarQuantizer):
            storage = "float16" if base.sq.qtype == faiss.ScalarQuantizer.QT_fp16 else "int8"
        return cls(idx.d, Config(storage=storage), _faiss_index=idx)
