"""Index kinds by name. Each kind is one module with a typed config dataclass and a class that
implements `VectorIndex`; `make_index("flat", dim, storage="float16")` builds one from a name.
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
from pixquery.indexes.base import VectorIndex, atomic_path

# kind -> module that defines it. Modules are imported on first use so that a user without
# annoy or hnswlib installed can still use the faiss kinds.
_MODULES = {
    "flat": "pixquery.indexes.flat",
}


def kinds() -> list[str]:
    return sorted(_MODULES)


def _module(kind: str):
    if kind not in _MODULES:
        raise PixqueryError(f"unknown index kind {kind!r}; known kinds: {', '.join(kinds())}")
    try:
        return importlib.import_module(_MODULES[kind])
    except ImportError as e:  # an optional library is missing
        raise PixqueryError(
            f"index kind {kind!r} needs a library that is not installed ({e.name}); "
            f"install it with: pip install 'pixquery[ann]'"
        ) from e


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
    return cls(**params)


def make_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    mod = _module(kind)
    return mod.Index(dim, make_config(kind, **params))


def load_index(kind: str, path: Path, mmap: bool = False) -> VectorIndex:
    return _module(kind).Index.load(Path(path), mmap=mmap)


__all__ = ["VectorIndex", "atomic_path", "kinds", "make_index", "load_index", "make_config", "config_class"]
