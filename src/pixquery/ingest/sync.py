"""The index stage: bring a model's ANN index in line with the catalog's embeddings.

The catalog is the truth; an index file is derived from it. A sync works out what the active
index lacks (new embeddings, re-embedded files marked stale) and what it holds that is gone
(deleted files), applies that to a copy of the index in memory, writes it under a NEW file name,
and only then, in one transaction, points the catalog at the new file and updates `index_image`.
A crash at any moment leaves the catalog pointing at a complete file whose contents match
`index_image`; leftover files are swept by the next sync. When the index file is missing or does
not match the catalog, the index is rebuilt from the stored embeddings: nothing is re-embedded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pixquery import _failpoints, indexes
from pixquery.catalog import Catalog, IndexRow, ModelRow

INDEX_DIR = "indexes"


@dataclass
class SyncReport:
    kind: str
    added: int
    removed: int
    total: int
    rebuilt: bool
    seconds: float
    size_bytes: int
    changed: bool


def _index_file_name(index_id: int, kind: str) -> str:
    return f"{INDEX_DIR}/{index_id}-{kind}-{time.time_ns()}.idx"


def sync_index(
    catalog: Catalog,
    library_dir: Path,
    model: ModelRow,
    kind: str,
    params: dict,
    *,
    rebuild: bool = False,  # True when the caller asks for other parameters than the index has
    on_stage: Callable[[str], None] | None = None,
    calibration_queries: Callable[[], np.ndarray] | None = None,  # text query vectors for `auto`
) -> SyncReport:
    t0 = time.perf_counter()
    library_dir = Path(library_dir)
    stage = on_stage or (lambda s: None)
    row = catalog.active_index(model.id)
    if row is not None and row.kind != kind:
        rebuild = True  # a different kind: a new index, built from the stored vectors
    index = None
    if row is not None and not rebuild:
        index = _load_matching(catalog, library_dir, row)
        if index is not None and getattr(index, "needs_rebuild", False):
            index = None  # `auto` chose for a collection a quarter of today's size: choose again
        if index is not None and hasattr(index, "calibration_queries"):
            index.calibration_queries = calibration_queries  # `auto` may measure again on add
    wanted = catalog.live_items(model.id)

    if index is None:
        # Full build: dense ids 0..n-1 in catalog order, so a rebuild equals a fresh build.
        stage(f"building {kind} index of {len(wanted)} vectors")
        if row is None or rebuild or row.kind != kind:
            row = catalog.create_index(model.id, kind, params)
        vectors = catalog.vectors_for(model.id, wanted, model.dim)
        index = indexes.build_index(kind, model.dim, np.arange(len(wanted), dtype=np.int64), vectors,
                                    queries=calibration_queries, **params)
        added = list(enumerate(wanted))
        removed_refs: list[int] = []
        clear, next_ref, rebuilt = True, len(wanted), True
    else:
        present = catalog.index_items(row.id)
        wanted_set = set(wanted)
        removed_refs = [ref for item, (ref, stale) in present.items() if stale or item not in wanted_set]
        new_items = [item for item in wanted if item not in present or present[item][1]]
        if not removed_refs and not new_items:
            _sweep(catalog, library_dir)
            return SyncReport(row.kind, 0, 0, len(index), False, time.perf_counter() - t0, row.size_bytes or 0, False)
        stage(f"updating {row.kind} index: +{len(new_items)} -{len(removed_refs)}")
        index.remove(np.asarray(removed_refs, dtype=np.int64))
        refs = np.arange(row.next_ref_id, row.next_ref_id + len(new_items), dtype=np.int64)
        index.add(refs, catalog.vectors_for(model.id, new_items, model.dim))
        added = list(zip(refs.tolist(), new_items))
        clear, next_ref, rebuilt = False, row.next_ref_id + len(new_items), False

    stage("saving index")
    rel = _index_file_name(row.id, row.kind)
    index.save(library_dir / rel)
    size = indexes.index_size(library_dir / rel)
    index_params = index.params()
    _failpoints.hit("before_index_commit")
    replaced = catalog.commit_index(
        row.id,
        path=rel,
        added=added,
        removed_refs=removed_refs,
        clear=clear,
        params=index_params,
        size_bytes=size,
        build_seconds=time.perf_counter() - t0,
        next_ref_id=next_ref,
        recall=index_params.get("measured_recall") if isinstance(index_params, dict) else None,
    )
    _failpoints.hit("after_index_commit")
    old = row.path
    for path in replaced + ([old] if old and old != rel else []):
        _unlink(library_dir / path)
    _sweep(catalog, library_dir)
    return SyncReport(row.kind, len(added), len(removed_refs), len(index), rebuilt, time.perf_counter() - t0, size, True)


def _load_matching(catalog: Catalog, library_dir: Path, row: IndexRow):
    """The index file of `row` if it exists, loads, and holds exactly what index_image says."""
    if not row.path or not (library_dir / row.path).exists():
        return None
    try:
        index = indexes.load_index(row.kind, library_dir / row.path)
    except Exception:
        return None  # unreadable: rebuilt from the stored embeddings
    if len(index) != catalog.count_index_entries(row.id):
        return None
    return index


def _sweep(catalog: Catalog, library_dir: Path) -> None:
    """Delete index files no catalog row points at (left by a crash between save and commit)."""
    folder = library_dir / INDEX_DIR
    if not folder.is_dir():
        return
    live = {r.path for r in catalog.indexes() if r.path}
    for f in folder.iterdir():
        rel = f"{INDEX_DIR}/{f.name}"
        if rel not in live and (f.suffix in (".idx", ".tmp") or f.name.startswith(".")):
            _unlink(f)


def _unlink(path: Path) -> None:
    indexes.delete_index(path)
