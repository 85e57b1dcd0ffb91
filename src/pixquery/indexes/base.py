"""The VectorIndex protocol, input checks, and the on-disk format shared by every kind.

An index holds L2-normalised vectors under caller-assigned ids and is scored by inner product, so
scores are cosine similarities. Ids are local to an index (the study's `index_ref_id`), int64 and
>= 0; they are never file ids. One kind = one module in this package (see `__init__.py`).

Common contract of every kind
-----------------------------
* `add(ids, vectors)`: an id that is already present is replaced (upsert), never duplicated.
* `remove(ids)`: ids that are not present are ignored.
* `search(queries, k)` -> `(scores, ids)`, both `(nq, k)`: float32 cosine, best first, and int64
  ids; rows with fewer than k hits are padded with id -1 and score -inf.
* `save(path)` is atomic and crash-safe; `load(path, mmap=False)` maps the file instead of reading
  it where the library can (faiss flat/IVF, annoy); a mapped index becomes a private in-memory copy
  on its first `add`/`remove`, so the saved file is never modified in place.

On-disk format: an index is a folder
------------------------------------
`path` is a folder that belongs to this one index:

    path/manifest.json        {"format": "pixquery-index", "kind", "dim", "params", "state",
                               "parts": {name: file}, "bundles": {name: folder}}
    path/<token>.<part>       files in the library's own format (a faiss index, an annoy forest,
                              an hnswlib graph, an .npy id map), so the library can memory-map them
    path/<token>.<name>/      nested indexes (the shards of `sharded`, the choice of `auto`)

Saving writes every part under a fresh token (temp file, fsync, rename), then replaces
manifest.json atomically (`atomic_path`), then deletes everything in the folder that the new
manifest does not name (older parts, temp files of crashed saves). A crash (kill -9, power loss)
at any moment leaves the old manifest naming old, complete parts, or the new manifest naming new,
complete parts. Delete an index with `delete_index(path)` (or rmtree); measure it with
`index_size(path)` (os.path.getsize of a folder is meaningless). Two processes must not save to
the same path at the same time (the catalog serialises writers); readers may load while a writer
saves.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FORMAT = "pixquery-index"
FORMAT_VERSION = 1


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

    def params(self) -> dict[str, Any]:
        """The parameters that built it (JSON-serialisable), recorded in the catalog."""
        ...

    def save(self, path: Path) -> None:
        """Atomic: written to a temp file beside `path`, fsynced, then renamed over it."""
        ...

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> VectorIndex: ...


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
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------- input checks and result padding


def as_ids(ids: npt.ArrayLike) -> np.ndarray:
    ids = np.ascontiguousarray(np.asarray(ids).reshape(-1), dtype=np.int64)
    if len(ids) and ids.min() < 0:
        raise ValueError("index ids must be >= 0 (-1 marks a missing result)")
    return ids


def as_vectors(vectors: npt.ArrayLike, dim: int, n: int | None = None) -> np.ndarray:
    v = np.asarray(vectors)
    if v.ndim == 1 and v.size == dim:
        v = v.reshape(1, dim)
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {v.shape}")
    if n is not None and len(v) != n:
        raise ValueError(f"{n} ids but {len(v)} vectors")
    return np.ascontiguousarray(v, dtype=np.float32)


def dedupe_last(ids: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """If an id occurs twice in one batch, keep its last vector (the batch is an upsert)."""
    if len(ids) < 2:
        return ids, vectors
    rev_unique, rev_first = np.unique(ids[::-1], return_index=True)
    if len(rev_unique) == len(ids):
        return ids, vectors
    keep = np.sort(len(ids) - 1 - rev_first)
    return ids[keep], vectors[keep]


def upsert_batch(ids: npt.ArrayLike, vectors: npt.ArrayLike, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """What every kind's `add` starts with: checked int64 ids and float32 (n, dim) vectors, an id
    given twice keeping its last vector (the batch is an upsert). May be empty."""
    ids = as_ids(ids)
    vectors = as_vectors(vectors, dim, len(ids))
    return dedupe_last(ids, vectors)


def empty_results(nq: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)


def pad_results(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bring results to (nq, k); missing hits get id -1 and score -inf."""
    scores = np.asarray(scores, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    nq = len(ids)
    if ids.ndim == 2 and ids.shape[1] > k:
        scores, ids = scores[:, :k], ids[:, :k]
    if ids.ndim != 2 or ids.shape[1] < k:
        s, i = empty_results(nq, k)
        if ids.ndim == 2 and ids.shape[1]:
            s[:, : ids.shape[1]] = scores
            i[:, : ids.shape[1]] = ids
        scores, ids = s, i
    scores = np.where(ids < 0, np.float32(-np.inf), scores).astype(np.float32, copy=False)
    return np.ascontiguousarray(scores), np.ascontiguousarray(ids)


def merge_results(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (scores, ids) into the global top-k (stable: ties keep shard order)."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return pad_results(np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1), k)


# ---------------------------------------------------------------- bundles (see module docstring)

MANIFEST = "manifest.json"


class Bundle:
    """A loaded manifest: its fields, and the paths of its parts and nested bundles."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.dim: int = int(manifest["dim"])
        self.params: dict[str, Any] = manifest.get("params", {})
        self.state: dict[str, Any] = manifest.get("state", {})

    def part(self, name: str) -> Path:
        return self.path / str(self.manifest["parts"][name])

    def has_part(self, name: str) -> bool:
        return name in self.manifest.get("parts", {})

    def bundle(self, name: str) -> Path:
        return self.path / str(self.manifest["bundles"][name])

    def bundle_names(self) -> list[str]:
        return list(self.manifest.get("bundles", {}))


def is_bundle(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_bundle(path: Path, kind: str | None = None) -> Bundle:
    """Read a manifest; check it is ours (and of `kind` if given) and that its parts exist.

    A reader that races a writer's clean-up may find a part gone; it then re-reads the manifest,
    which by then names the new parts.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no index there" if not path.exists() else f"{path}: not a pixquery index folder"
        )
    names: list[str] = []
    for attempt in range(5):
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: not a pixquery index (no {MANIFEST}; was its first save interrupted?)"
            ) from None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: unreadable index manifest ({e})") from e
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: not a pixquery index")
        if manifest.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path}: written by a newer pixquery (format {manifest['version']})")
        if kind is not None and manifest.get("kind") != kind:
            raise ValueError(f"{path}: is a {manifest.get('kind')!r} index, not {kind!r}")
        names = list(manifest.get("parts", {}).values()) + list(manifest.get("bundles", {}).values())
        if all((path / n).exists() for n in names):
            return Bundle(path, manifest)
        time.sleep(0.05 * (attempt + 1))
    missing = [n for n in names if not (path / n).exists()]
    raise FileNotFoundError(f"{path}: index parts missing: {', '.join(missing)}")


def write_bundle(
    path: Path,
    kind: str,
    dim: int,
    params: dict[str, Any],
    state: dict[str, Any] | None = None,
    parts: dict[str, Callable[[Path], None]] | None = None,
    bundles: dict[str, Callable[[Path], None]] | None = None,
) -> None:
    """Save an index folder atomically (see the module docstring).

    `parts[name](tmp_path)` writes one file (then fsynced and renamed into place);
    `bundles[name](folder)` saves a nested index into that (new) folder.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():  # a single-file index of pixquery 0.1 at this path
        path.unlink()
    if not path.is_dir():
        path.mkdir(parents=True)
        _fsync_dir(path.parent)
    token = secrets.token_hex(4)
    written: dict[str, str] = {}
    nested: dict[str, str] = {}
    try:
        for name, writer in (parts or {}).items():
            fname = f"{token}.{name}"
            with atomic_path(path / fname) as tmp:
                writer(tmp)
            written[name] = fname
        for name, saver in (bundles or {}).items():
            fname = f"{token}.{name}"
            saver(path / fname)
            nested[name] = fname
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": kind,
            "dim": int(dim),
            "params": params,
            "state": state or {},
            "parts": written,
            "bundles": nested,
        }
        text = json.dumps(manifest, indent=1)
        with atomic_path(path / MANIFEST) as tmp:
            tmp.write_text(text)
    except BaseException:
        for fname in list(written.values()) + list(nested.values()):
            _remove(path / fname)
        raise
    collect_garbage(path)


def index_files(path: Path) -> list[Path]:
    """Every file an index consists of: its manifest, parts and nested indexes (recursively).

    For a single file (an index of pixquery 0.1), just that file.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not is_bundle(path):
        return []
    manifest = json.loads((path / MANIFEST).read_text())
    out = [path / MANIFEST]
    out += [path / f for f in manifest.get("parts", {}).values()]
    for fname in manifest.get("bundles", {}).values():
        out.extend(index_files(path / fname))
    return out


def index_size(path: Path) -> int:
    """Bytes on disk of an index (manifest + all parts). Use this, not os.path.getsize."""
    return sum(p.stat().st_size for p in index_files(path) if p.exists())


def delete_index(path: Path) -> None:
    """Remove an index and everything it consists of, including leftovers of crashed saves."""
    _remove(Path(path))


def collect_garbage(path: Path) -> list[Path]:
    """Delete what the current manifest does not reference: parts of older saves and the temp
    files of saves that crashed. The folder belongs to this one index, so nothing else is there."""
    path = Path(path)
    if not is_bundle(path):
        return []
    manifest = json.loads((path / MANIFEST).read_text())
    keep = {MANIFEST, *manifest.get("parts", {}).values(), *manifest.get("bundles", {}).values()}
    removed = []
    for e in os.scandir(path):
        if e.name not in keep:
            _remove(path / e.name)
            removed.append(path / e.name)
    return removed


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    except FileNotFoundError:
        pass


def save_npy(arr: np.ndarray) -> Callable[[Path], None]:
    """A part writer for a numpy array (loadable with mmap)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)

    return write


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    array: np.ndarray = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return array
