"""Index kinds by name. Each kind is one module with a typed config dataclass `Config` (its fields
are the kind's parameters) and a class `Index` that implements `VectorIndex`:

    make_index("hnsw", 512, M=32, ef_construction=200)   # empty index
    build_index("ivf", 512, ids, vectors, nprobe=64)     # created and filled
    build_index("auto", 512, ids, vectors, queries=q)    # measured choice (see auto.py)
    index.save(path); load_index("hnsw", path, mmap=True); open_index(path)
    index_size(path); index_files(path); delete_index(path)

Kinds: flat (exact, or quantised scans), hnsw (hnswlib graph, or faiss's with backend="faiss"),
annoy (static forest), ivf (faiss inverted file, for 1M+), sharded (N sub-indexes of any kind),
auto (measured choice; the default), milvus (a Milvus collection: embedded milvus-lite or a
server/cluster; the [milvus] extra).
See docs/indexes.md for what each costs and when to use it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os

# Idle OpenMP threads must sleep, not spin: a spinning faiss pool steals a core from the image
# encoder. Must be set before faiss is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path
from typing import Any

from pixquery.errors import PixqueryError
from pixquery.indexes.base import (
    VectorIndex,
    atomic_path,
    delete_index,
    index_files,
    index_size,
    read_bundle,
)

DEFAULT_KIND = "auto"

# kind -> module that defines it. Modules are imported on first use so that a user without
# annoy or hnswlib installed can still use the faiss kinds.
_MODULES = {
    "flat": "pixquery.indexes.flat",
    "hnsw": "pixquery.indexes.hnsw",
    "annoy": "pixquery.indexes.annoy",
    "ivf": "pixquery.indexes.ivf",
    "sharded": "pixquery.indexes.sharded",
    "auto": "pixquery.indexes.auto",
    "milvus": "pixquery.indexes.milvus",
}

# kinds whose optional library comes with an extra other than [ann]
_EXTRAS = {"milvus": "milvus"}


def kinds() -> list[str]:
    return sorted(_MODULES)


def missing_library(kind: str, library: str | None, alternative: str = "") -> PixqueryError:
    """The one-line error for a kind whose optional library (the `ann` extra, or the kind's own
    extra such as `milvus`) is not installed."""
    extra = _EXTRAS.get(kind, "ann")
    return PixqueryError(
        f"index kind {kind!r} needs a library that is not installed ({library}); "
        f"install it with: pip install 'pixquery[{extra}]'" + (f" ({alternative})" if alternative else "")
    )


def _module(kind: str):
    if kind not in _MODULES:
        raise PixqueryError(f"unknown index kind {kind!r}; known kinds: {', '.join(kinds())}")
    try:
        return importlib.import_module(_MODULES[kind])
    except ImportError as e:  # an optional library is missing
        raise missing_library(kind, e.name) from e


def config_class(kind: str):
    """The typed config dataclass of a kind (fields = its tunable parameters)."""
    return _module(kind).Config


def make_config(kind: str, **params: Any):
    cls = config_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - names
    if unknown:
        raise PixqueryError(
            f"index kind {kind!r} has no parameter(s) {', '.join(sorted(unknown))}; "
            f"it takes: {', '.join(sorted(names)) or 'none'}"
        )
    try:
        return cls(**params)
    except (ValueError, TypeError) as e:
        raise PixqueryError(f"index kind {kind!r}: {e}") from e


def make_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    mod = _module(kind)
    return mod.Index(dim, make_config(kind, **params))


def build_index(kind: str, dim: int, ids, vectors, queries=None, **params: Any) -> VectorIndex:
    """Create an index and add all vectors in one go (quantised kinds train on them).

    `queries` (optional: (m, dim) text query vectors, or a function returning them, called only if
    a measurement happens) calibrate `auto`, now and when it measures again; other kinds ignore them.
    """
    index = make_index(kind, dim, **params)
    if kind == "auto":
        index.calibration_queries = queries
        index.fit(ids, vectors)
    else:
        index.add(ids, vectors)
        if hasattr(index, "build"):  # static kinds (annoy) build now, not on the first search
            index.build()
    return index


def load_index(kind: str | None, path: Path, mmap: bool = False) -> VectorIndex:
    """Load an index saved by `save`. `kind` None reads it from the file."""
    path = Path(path)
    if kind is None:
        return open_index(path, mmap=mmap)
    return _module(kind).Index.load(path, mmap=mmap)


def open_index(path: Path, mmap: bool = False) -> VectorIndex:
    """Load an index of whatever kind the file says."""
    path = Path(path)
    return _module(index_kind(path)).Index.load(path, mmap=mmap)


def index_kind(path: Path) -> str:
    """The kind recorded in a saved index."""
    path = Path(path)
    if path.is_file():
        return "flat"  # pixquery 0.1 saved flat indexes as a bare faiss file
    return read_bundle(path).kind


__all__ = [
    "DEFAULT_KIND",
    "VectorIndex",
    "atomic_path",
    "build_index",
    "config_class",
    "delete_index",
    "index_files",
    "index_kind",
    "index_size",
    "kinds",
    "load_index",
    "make_config",
    "make_index",
    "open_index",
]
