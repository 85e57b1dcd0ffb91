"""The index stage: bring a model's ANN index in line with the catalog's embeddings.

The catalog is the truth; an index file is derived from it. A sync works out what the active
index lacks (new embeddings, re-embedded files marked stale) and what it holds that is gone
(deleted files), applies that to a copy of the index in memory, writes it under a NEW file name,
and only then, in one transaction, points the catalog at the new file and updates `index_image`.
A crash at any moment leaves the catalog pointing at a complete file whose contents match
`index_image`; leftover files are swept by the next sync. When the index file is missing or does
not match the catalog, the index is rebuilt from the stored embeddings: nothing is re-embedded.

A **shared** index (a Milvus collection on a server: `index.shared`) is not a file the catalog can
switch atomically: its writes are seen by every reader at once, and a crash between a write and
the catalog commit leaves the collection ahead of (or behind) the catalog. So before writing to
one, the sync records the store in the catalog (`WRITES_KEY`); the next sync that finds the mark
reconciles: ids the collection holds but the catalog does not are removed, ids the catalog maps but
the collection lacks are added again from the stored embeddings, and a store a crashed full build
left behind (no catalog row names it) is dropped. A full build into a shared store loads the
stored embeddings in batches (`LOAD_BATCH`), with progress, instead of all at once; when a rebuild
commits, the store it replaced is dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixquery import _failpoints, indexes
from pixquery.catalog import Catalog, IndexRow, ModelRow

INDEX_DIR = "indexes"
WRITES_KEY = "index_writes:{model_id}"  # setting: stores being written, reconciled after a crash
LOAD_BATCH = 20_000  # vectors read from the catalog and sent to a shared store per step

log = logging.getLogger(__name__)


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
    on_load: Callable[[int, int], None] | None = None,  # (done, total) vectors into a shared store
    calibration_queries: Callable[[], np.ndarray] | None = None,  # text query vectors for `auto`
) -> SyncReport:
    t0 = time.perf_counter()
    library_dir = Path(library_dir)
    stage = on_stage or (lambda s: None)
    row = catalog.active_index(model.id)
    if row is not None and row.kind != kind:
        log.info("index kind %s -> %s: building a new index from the stored embeddings", row.kind, kind)
        rebuild = True  # a different kind: a new index, built from the stored vectors
    elif row is not None and rebuild:
        log.info("index parameters changed: rebuilding the %s index from the stored embeddings", kind)
    index = None
    if row is not None and not rebuild:
        index = _load_matching(catalog, library_dir, row)
        if index is not None and getattr(index, "needs_rebuild", False):
            log.info("auto index: the collection has grown past what it was chosen for; choosing again")
            index = None  # `auto` chose for a collection a quarter of today's size: choose again
        if index is not None and hasattr(index, "calibration_queries"):
            index.calibration_queries = calibration_queries  # `auto` may measure again on add
    reconcile = _settle_crashed_writes(
        catalog, model, _manifest_store(library_dir / row.path) if row and row.path else None, stage
    )
    wanted = catalog.live_items(model.id)
    bulk = getattr(indexes.config_class(kind), "bulk_load", False)  # filled add after add (Milvus)

    if index is None and bulk:
        # Made empty, then loaded in batches with progress; a shared store is marked first.
        stage(f"loading {len(wanted)} vectors into a new {kind} index")
        row = catalog.create_index(model.id, kind, params)
        index = indexes.make_index(kind, model.dim, **params)
        if getattr(index, "shared", False):
            _mark_writing(catalog, model, index)
            if len(index):  # a collection named in params that already holds vectors: start over
                index.drop()
                index = indexes.make_index(kind, model.dim, **params)
        _load_in_batches(catalog, model, index, list(enumerate(wanted)), on_load)
        added = list(enumerate(wanted))
        removed_refs: list[int] = []
        clear, next_ref, rebuilt = True, len(wanted), True
    elif index is None:
        # Full build: dense ids 0..n-1 in catalog order, so a rebuild equals a fresh build.
        stage(f"building {kind} index of {len(wanted)} vectors")
        log.info("building a new %s index of %d vectors", kind, len(wanted))
        if row is None or rebuild or row.kind != kind:
            row = catalog.create_index(model.id, kind, params)
        vectors = catalog.vectors_for(model.id, wanted, model.dim)
        index = indexes.build_index(
            kind, model.dim, np.arange(len(wanted), dtype=np.int64), vectors, queries=calibration_queries, **params
        )
        added = list(enumerate(wanted))
        removed_refs = []
        clear, next_ref, rebuilt = True, len(wanted), True
    else:
        present = catalog.index_items(row.id)
        wanted_set = set(wanted)
        removed_refs = [ref for item, (ref, stale) in present.items() if stale or item not in wanted_set]
        new_items = [item for item in wanted if item not in present or present[item][1]]
        restore: list[tuple[int, tuple]] = []  # (ref, item) the catalog maps but a shared store lost
        if getattr(index, "shared", False) and (reconcile or len(index) != len(present)):
            stage("checking the index's collection against the catalog")
            extra, restore = _differences(index, present, set(removed_refs))
            removed_refs.extend(extra)
        if not removed_refs and not new_items and not restore:
            _sweep(catalog, library_dir)
            _clear_writing(catalog, model)
            return SyncReport(row.kind, 0, 0, len(index), False, time.perf_counter() - t0, row.size_bytes or 0, False)
        stage(
            f"updating {row.kind} index: +{len(new_items)} -{len(removed_refs)}"
            + (f" (restoring {len(restore)})" if restore else "")
        )
        if getattr(index, "shared", False):
            _mark_writing(catalog, model, index)
        index.remove(np.asarray(removed_refs, dtype=np.int64))
        refs = np.arange(row.next_ref_id, row.next_ref_id + len(new_items), dtype=np.int64)
        added = list(zip(refs.tolist(), new_items))
        if bulk or getattr(index, "shared", False):
            _load_in_batches(catalog, model, index, restore + added, on_load)
        else:
            index.add(refs, catalog.vectors_for(model.id, new_items, model.dim))
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
        _drop_replaced_store(library_dir / path, index)
        _unlink(library_dir / path)
    _clear_writing(catalog, model)
    _sweep(catalog, library_dir)
    return SyncReport(
        row.kind, len(added), len(removed_refs), len(index), rebuilt, time.perf_counter() - t0, size, True
    )


# -- shared stores (a Milvus collection): crash marks, reconcile, batched loads -------------------


def _manifest_store(path: Path) -> dict | None:
    """The shared store a saved index names (None: its vectors are in its own files)."""
    try:
        b = indexes.read_bundle(path)
    except Exception:
        return None
    uri = b.params.get("uri", "") if isinstance(b.params, dict) else ""
    if not uri:
        return None
    return {"kind": b.kind, "dim": b.dim, "uri": uri, "collection": b.params.get("collection", "")}


def _store_of(index) -> dict:
    """What names a shared store: its kind and the params that reach it (uri, collection)."""
    p = index.params()
    return {"kind": index.kind, "dim": index.dim, "uri": p.get("uri", ""), "collection": p.get("collection", "")}


def _mark_writing(catalog: Catalog, model: ModelRow, index) -> None:
    """Record, before the first write, that `index`'s store may soon differ from the catalog."""
    key = WRITES_KEY.format(model_id=model.id)
    marks = json.loads(catalog.get_setting(key) or "[]")
    store = _store_of(index)
    if store not in marks:
        with catalog.transaction():
            catalog.set_setting(key, json.dumps(marks + [store], sort_keys=True))


def _clear_writing(catalog: Catalog, model: ModelRow) -> None:
    key = WRITES_KEY.format(model_id=model.id)
    if catalog.get_setting(key):
        with catalog.transaction():
            catalog.set_setting(key, "[]")


def _settle_crashed_writes(catalog: Catalog, model: ModelRow, mine: dict | None, stage) -> bool:
    """After a crash mid-write: drop stores no catalog row names (a full build that never
    committed); return True when the active index's own store was being written (reconcile it)."""
    marks = json.loads(catalog.get_setting(WRITES_KEY.format(model_id=model.id)) or "[]")
    if not marks:
        return False
    reconcile = False
    for store in marks:
        if mine is not None and (store["uri"], store["collection"]) == (mine["uri"], mine["collection"]):
            reconcile = True
            continue
        stage(f"dropping {store['collection']}: left by an index build that did not finish")
        try:
            orphan = indexes.make_index(store["kind"], store["dim"], uri=store["uri"], collection=store["collection"])
            orphan.drop()
        except Exception as e:  # unreachable now: the mark stays until a later sync can drop it
            log.warning("could not drop %s, left by an index build that did not finish: %s", store["collection"], e)
            stage(f"could not drop {store['collection']}: {e}")
            return reconcile
    return reconcile


def _differences(index, present: dict, leaving: set[int]) -> tuple[list[int], list[tuple[int, tuple]]]:
    """(ids the store holds that the catalog does not map, (ref, item) the catalog maps and keeps
    that the store lacks). Sorted numpy set operations: a scan of 10^8 ids stays in memory once."""
    held = index.ids()
    mapped = np.fromiter((ref for ref, _ in present.values()), np.int64, len(present))
    extra = np.setdiff1d(held, mapped, assume_unique=True)
    lost = set(np.setdiff1d(mapped, held, assume_unique=True).tolist()) - leaving
    restore = [(ref, item) for item, (ref, _stale) in present.items() if ref in lost]
    return extra.tolist(), restore


def _load_in_batches(catalog: Catalog, model: ModelRow, index, entries: list[tuple[int, tuple]], on_load) -> None:
    """Send (ref, item) entries' stored vectors (and the scalar fields the index keeps) to the
    index, LOAD_BATCH at a time, reporting progress."""
    total = len(entries)
    keeps_fields = bool(getattr(index, "scalar_fields", ()))
    if on_load:
        on_load(0, total)
    for start in range(0, total, LOAD_BATCH):
        chunk = entries[start : start + LOAD_BATCH]
        refs = np.fromiter((ref for ref, _ in chunk), np.int64, len(chunk))
        items = [item for _, item in chunk]
        vectors = catalog.vectors_for(model.id, items, model.dim)
        if keeps_fields:
            index.add(refs, vectors, fields=catalog.index_fields(items))
        else:
            index.add(refs, vectors)
        _failpoints.hit("index_load_batch")
        if on_load:
            on_load(start + len(chunk), total)


def _drop_replaced_store(old_path: Path, new_index) -> None:
    """A rebuild replaced an index whose vectors live in a shared store: drop that store unless the
    new index uses the same one (an incremental sync only writes a new manifest)."""
    old = _manifest_store(old_path)
    if old is None:
        return
    if getattr(new_index, "shared", False):
        new = _store_of(new_index)
        if (old["uri"], old["collection"]) == (new["uri"], new["collection"]):
            return
    try:
        indexes.load_index(old["kind"], old_path).drop()
    except Exception as e:  # the server is gone: its collection stays (named in no catalog row)
        log.warning("could not drop %s's collection %s, replaced by a rebuild: %s", old["kind"], old["collection"], e)


def _load_matching(catalog: Catalog, library_dir: Path, row: IndexRow):
    """The index file of `row` if it exists, loads, and holds exactly what index_image says."""
    if not row.path:
        return None
    path = library_dir / row.path
    if not path.exists():
        log.warning("%s: the index file is missing; rebuilding it from the stored embeddings", path)
        return None
    try:
        index = indexes.load_index(row.kind, path)
    except Exception as e:  # unreadable: rebuilt from the stored embeddings (hours at 10^6+: say why)
        log.warning(
            "%s: cannot load the %s index (%s); rebuilding it from the stored embeddings",
            path,
            row.kind,
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        return None
    if getattr(index, "shared", False):
        return index  # a shared store is reconciled with the catalog, never rebuilt for a mismatch
    expected = catalog.count_index_entries(row.id)
    if len(index) != expected:
        log.warning(
            "%s: the index holds %d vectors where the catalog maps %d; rebuilding it from the stored embeddings",
            path,
            len(index),
            expected,
        )
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
