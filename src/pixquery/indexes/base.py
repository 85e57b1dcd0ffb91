"""The VectorIndex protocol: an ANN index over L2-normalised vectors, scored by inner product.

Ids are local to an index (the study's `index_ref_id`), int64, assigned by the caller; they are
never file ids. One kind = one file in this package, registered by name in `KINDS`.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class VectorIndex(Protocol):
    kind: str  # registry name, e.g. "flat"
    dim: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(nq, dim) -> (scores (nq, k) float32 cosine, ids (nq, k) int64; -1 where fewer hits)."""
        ...

    def __len__(self) -> int: ...

    def params(self) -> dict:
        """The parameters that built it (JSON-serialisable), recorded in the catalog."""
        ...

    def save(self, path: Path) -> None:
        """Atomic: written to a temp file beside `path`, fsynced, then renamed over it."""
        ...

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> "VectorIndex": ...


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path in the same folder; on success fsync it and rename it onto `path`.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
