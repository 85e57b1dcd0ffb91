"""Store-only libraries: `pixquery import DIR --store-only --index milvus --param uri=...` loads the
Parquet shards of `pixquery embed` straight into a Milvus collection, with no catalog row per image.

At 10^8 photos a catalog row and a stored vector per photo is ~215 GB of SQLite on one disk (see
docs/scale.md); a store-only library keeps each vector only once, in the collection, together with
the file's path, width and height (the milvus kind's `store_paths` fields), and search names its
results from those. The catalog keeps only what makes the library work: the model, the setting
that says where the collection is (`SETTING`), and which shards of which embed runs are loaded
(catalog/shards.py), so a killed import resumes and a re-run skips loaded shards.

Every vector's id is stable: run << 48 | partition << 24 | row, where `run` numbers the embed run
(a shard folder, known by its manifest's source and creation time, wherever the folder is now) in
this library, `partition` its shard and `row` the row in that shard (shards are written once,
sorted by path). Loading a shard again upserts the same ids, so a shard loaded when the import was
killed before recording it is simply loaded again. Several embed runs (new photos embedded into a
new folder later) can be imported into one library: each gets its own number.

What a store-only library cannot do is in CANNOT; each is refused with one line naming the reason
and what to do instead (also in docs/scale.md and `pixquery import --help`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixquery import _failpoints
from pixquery.errors import IndexStoreError, LibraryError, PixqueryError

SETTING = "store_only"  # JSON: {"kind", "params", "dim", "model", "precision", "fingerprint"}
STORE_FILE = "store.milvus.db"  # uri "": a milvus-lite file in the library folder (tests, small use)
RUN_BITS, PARTITION_BITS, ROW_BITS = 15, 24, 24  # 15 + 24 + 24 = 63: ids stay positive int64
LOAD_BATCH = 10_000  # rows sent per add() (the index splits them into its own batches)
FILE_FIELDS = ("path", "width", "height")

# What a store-only library cannot do, and why: the message of each refusal.
CANNOT = {
    "index": "it has no catalog row per file, so there are no file versions to rescan and nothing to add "
    "regions or videos to: embed new photos with `pixquery embed FOLDER --out DIR`, then "
    "`pixquery import DIR --store-only`",
    "reindex": "its vectors live only in the collection (the catalog keeps no copy to build another index "
    "from): to change the index, import the shards again into a new library "
    "(`pixquery import DIR --store-only` with other --param values, or without --store-only)",
    "image_id": "it has no image ids (no catalog rows): search with --image PATH instead",
    "import": "its vectors live only in its collection: import shards with --store-only, or into another library",
    "filters and sort": "it keeps no dates, places or folders per file (no catalog rows): search it without "
    "filters, or import the shards into a library without --store-only",
    "duplicates": "it has no catalog rows (no content hashes, no stored vectors) to compare: import the shards "
    "without --store-only to find duplicates",
}


def describe(lib) -> str:
    store = settings(lib.catalog)
    where = store["params"].get("uri") or f"{Path(lib.path) / STORE_FILE}"
    return f"the library at {lib.path} is store-only (collection {store['params'].get('collection')} at {where})"


def settings(catalog) -> dict | None:
    """The library's store-only setting, or None for an ordinary (catalog) library."""
    raw = catalog.get_setting(SETTING)
    return json.loads(raw) if raw else None


def refuse(lib, action: str) -> None:
    """Raise the one-line error for `action` if `lib` is store-only (no-op otherwise)."""
    if settings(lib.catalog) is not None:
        raise LibraryError(f"{describe(lib)}: {CANNOT[action]}")


def vector_id(run: int, partition: int, row: np.ndarray) -> np.ndarray:
    return (
        (np.int64(run) << np.int64(PARTITION_BITS + ROW_BITS))
        | (np.int64(partition) << np.int64(ROW_BITS))
        | row.astype(np.int64)
    )


def _shard_range(run: int, partition: int) -> tuple[int, int]:
    lo = int(vector_id(run, partition, np.zeros(1, np.int64))[0])
    return lo, lo + (1 << ROW_BITS)


def _resolved(lib, params: dict) -> dict:
    """The params an index is opened with: uri "" is the library's own milvus-lite file."""
    p = dict(params)
    if not p.get("uri"):
        p["uri"] = str(Path(lib.path).resolve() / STORE_FILE)
    return p


def open_store(lib, token: str = ""):
    """The collection of a store-only library (its index object)."""
    from pixquery import indexes

    store = settings(lib.catalog)
    params = _resolved(lib, store["params"])
    if token:
        params["token"] = token
    return indexes.make_index(store["kind"], int(store["dim"]), **params)


def close_store(lib, index) -> None:
    """Close the collection; the library's own milvus-lite file is also released (its process
    stopped), so that another process may open it."""
    index.close()
    store = settings(lib.catalog)
    if store is not None and not store["params"].get("uri"):
        from pixquery.indexes.milvus import _release_lite

        _release_lite(Path(lib.path).resolve() / STORE_FILE)


# -- import --------------------------------------------------------------------------------


@dataclass
class StoreImportReport:
    shards: int = 0  # loaded in this run
    skipped_shards: int = 0  # loaded by an earlier run
    reloaded_shards: int = 0  # recorded as loaded but short in the collection: loaded again
    vectors: int = 0  # sent to the collection in this run
    total: int = 0  # vectors the collection holds at the end
    failed: list[tuple[str, str]] = field(default_factory=list)  # this run's shards' rows the embed run could not use
    failed_before: int = 0  # the same, in shards loaded by earlier runs
    missing_partitions: list[int] = field(default_factory=list)
    model: str = ""
    model_spec: str = ""
    kind: str = ""
    uri: str = ""
    collection: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["failed"] = [{"path": p, "reason": r} for p, r in self.failed]
        d["seconds"] = round(self.seconds, 3)
        d["store_only"] = True
        return d


def _fingerprint_and_key(store, ids: list[int]) -> tuple[dict, dict[int, int], str, list[int]]:
    from pixquery.ingest.shards import MANIFEST, shard_name

    footers = {pid: store.read_footer(shard_name(pid)) for pid in ids}
    fingerprints = {m.get("fingerprint") for m, _ in footers.values()}
    if len(fingerprints) != 1 or None in fingerprints:
        raise PixqueryError(f"{store.uri} mixes shards of several models ({', '.join(map(str, fingerprints))})")
    rows = {pid: n for pid, (_, n) in footers.items()}
    missing: list[int] = []
    if store.exists(MANIFEST):
        meta = store.read_metadata(MANIFEST)
        key = json.dumps({"source": meta.get("source"), "created": meta.get("created")}, sort_keys=True)
        parts = store.read_table(MANIFEST, columns=["partition"]).column("partition").to_numpy()
        missing = sorted(set(np.unique(parts).tolist()) - set(ids))
    else:
        key = json.dumps({"uri": store.uri})
    return footers[ids[0]][0], rows, key, missing


def import_store_only(
    lib,
    uri: str,
    *,
    kind: str | None = None,
    params: dict | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_load: Callable[[int, int], None] | None = None,
) -> StoreImportReport:
    """Load the shards in `uri` into the collection of the store-only library `lib` (made store-only
    by its first such import: `kind` milvus, `params` its uri, collection, index type...). Resumes:
    shards already loaded are skipped. on_load(done, total): shard rows so far, for a progress bar."""
    from pixquery.ingest.shards import ShardDir

    t0 = time.perf_counter()
    stage = on_stage or (lambda s: None)
    report = StoreImportReport()
    store = ShardDir(uri)
    ids = store.shard_ids()
    if not ids:
        raise PixqueryError(f"no shards (part-*.parquet) in {store.uri}: run pixquery embed SOURCE --out {uri} first")
    first, rows, key, report.missing_partitions = _fingerprint_and_key(store, ids)
    report.model, report.model_spec = first.get("model", ""), first.get("model_spec", "")
    fingerprint, dim = first["fingerprint"], int(first["dim"])
    params = dict(params or {})
    token = str(params.pop("token", "") or "")
    cat = lib.catalog
    with lib._write_lock():
        saved = settings(cat)
        if saved is None:
            saved = _make_store_only(lib, kind, params, first, token)
        else:
            _check_same_store(lib, saved, kind, params, fingerprint)
        index = open_store(lib, token)
        try:
            report.kind, report.collection = saved["kind"], saved["params"]["collection"]
            report.uri = saved["params"].get("uri") or str(Path(lib.path).resolve() / STORE_FILE)
            with cat.transaction():
                run = cat.shard_source(key, store.uri, fingerprint)
            if run >= 1 << RUN_BITS:
                raise PixqueryError(f"a store-only library holds at most {(1 << RUN_BITS) - 1} embed runs")
            for pid, n in rows.items():
                if pid >= 1 << PARTITION_BITS or n >= 1 << ROW_BITS:
                    raise PixqueryError(
                        f"{store.uri}: shard {pid} ({n} rows) is past what a store-only id holds "
                        f"(partitions < 2^{PARTITION_BITS}, rows < 2^{ROW_BITS})"
                    )
            loader = _Loader(cat, index, store, run, rows, dim, report, on_load)
            loader.load(ids)
            stage("checking the collection against the loaded shards")
            short = _verify(cat, index)
            if short:
                mine = [pid for r, pid in short if r == run]
                report.reloaded_shards = len(mine)
                stage(f"{len(short)} shards are short in the collection: loading {len(mine)} again")
                loader.load(mine)
                short = _verify(cat, index)
            if short:
                sources = {r: u for r, u, _ in cat.shard_sources()}
                where = sorted({sources.get(r, "?") for r, _ in short})
                raise IndexStoreError(
                    f"the collection lacks vectors of {len(short)} loaded shards of "
                    f"{', '.join(where)}: run pixquery import --store-only on each again"
                )
            report.total = len(index)
        finally:
            close_store(lib, index)
    report.seconds = time.perf_counter() - t0
    return report


def _make_store_only(lib, kind: str | None, params: dict, first: dict, token: str) -> dict:
    """Make `lib` store-only (an empty library only): the collection is made, then remembered."""
    from pixquery import indexes

    cat = lib.catalog
    kind = kind or "milvus"
    if "store_paths" not in {f.name for f in dataclasses.fields(indexes.config_class(kind))}:
        raise PixqueryError(
            f"--store-only needs an index kind that keeps each file's path beside its vector (milvus), not {kind!r}"
        )
    images, embedded = cat.count_images(), sum(cat.count_embeddings(m.id) for m in cat.models())
    if images or embedded or cat.folders():
        raise LibraryError(
            f"the library at {lib.path} has {images} images in its catalog: a store-only library "
            "starts empty (give a new --library), or import without --store-only"
        )
    params = {**params, "store_paths": True}
    params.pop("token", None)
    opened = _resolved(lib, params)
    index = indexes.make_index(kind, int(first["dim"]), **opened, **({"token": token} if token else {}))
    try:
        made = index.params()
    finally:
        index.close()
    saved_params = {k: v for k, v in made.items() if k in params or k in ("collection", "index_type", "uri")}
    saved_params["uri"] = params.get("uri", "")  # "": the library's own file, wherever the folder moves
    store = {
        "kind": kind,
        "params": saved_params,
        "dim": int(first["dim"]),
        "model": first.get("model_spec", ""),
        "precision": first.get("precision") or "fp32",
        "fingerprint": first["fingerprint"],
    }
    with cat.transaction():
        model = cat.ensure_model(first["model"], first["fingerprint"], int(first["dim"]))
        if model.dim == 0:
            cat.set_model_shape(model.id, first["model"], int(first["dim"]))
        cat.set_setting("model", first["model_spec"])
        cat.set_setting("precision", first.get("precision") or "fp32")
        cat.set_setting(SETTING, json.dumps(store, sort_keys=True))
    return store


def _check_same_store(lib, saved: dict, kind: str | None, params: dict, fingerprint: str) -> None:
    if fingerprint != saved["fingerprint"]:
        raise PixqueryError(
            f"{describe(lib)} of vectors of {saved['model']} (fingerprint {saved['fingerprint']}); "
            f"these shards were made with another model ({fingerprint}): import them into another library"
        )
    if kind and kind != saved["kind"]:
        raise PixqueryError(f"{describe(lib)}: its index kind is {saved['kind']}, not {kind}")
    fixed = {k: v for k, v in params.items() if k not in ("timeout", "batch")}
    differ = {k: v for k, v in fixed.items() if str(saved["params"].get(k, "")) != str(v) and k != "store_paths"}
    if differ:
        raise PixqueryError(
            f"{describe(lib)}, made with {json.dumps(saved['params'], sort_keys=True)}: "
            f"leave out --param {', '.join(sorted(differ))} (or import into a new library)"
        )


class _Loader:
    """Sends shards to the collection, records each loaded shard in the catalog."""

    def __init__(self, cat, index, store, run: int, rows: dict[int, int], dim: int, report, on_load):
        self.cat, self.index, self.store, self.run, self.rows, self.dim = cat, index, store, run, rows, dim
        self.report, self.on_load = report, on_load or (lambda done, total: None)
        self.total = sum(rows.values())
        self.done = 0

    def load(self, partitions: list[int]) -> None:
        from pixquery.ingest.shards import shard_name

        loaded = self.cat.loaded_shards(self.run)
        self.done = sum(self.rows[p] for p in self.rows if p in loaded)
        self.on_load(self.done, self.total)
        for pid in partitions:
            if pid in loaded:
                self.report.skipped_shards += 1
                self.report.failed_before += loaded[pid][1]
                continue
            table = self.store.read_table(
                shard_name(pid), columns=["path", "mtime_ns", "width", "height", "embedding", "error"]
            )
            vectors, failed = self._send(pid, table)
            _failpoints.hit("store_only/after_shard_load")  # loaded, not yet recorded: a re-run loads it again
            with self.cat.transaction():
                self.cat.mark_shard_loaded(self.run, pid, vectors, failed)
            self.report.shards += 1

    def _send(self, pid: int, table) -> tuple[int, int]:
        errors = table.column("error").to_pylist()
        paths = table.column("path").to_pylist()
        ok = np.asarray([i for i, e in enumerate(errors) if e is None], np.int64)
        for i, reason in enumerate(errors):
            if reason is not None:
                self.report.failed.append((paths[i], reason))
        emb = table.column("embedding").combine_chunks()
        flat = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        # Null rows (failures) have no values in the flattened child: map row -> position.
        pos = np.cumsum(~np.asarray(emb.is_null().to_numpy(zero_copy_only=False))) - 1
        mtimes = np.asarray(table.column("mtime_ns").to_pylist(), np.int64)
        widths = np.asarray([w or 0 for w in table.column("width").to_pylist()], np.int32)
        heights = np.asarray([h or 0 for h in table.column("height").to_pylist()], np.int32)
        ids = vector_id(self.run, pid, ok)
        start_done = self.done
        for start in range(0, len(ok), LOAD_BATCH):
            rows = ok[start : start + LOAD_BATCH]
            fields = {
                "media": np.zeros(len(rows), np.int8),
                "folder": np.full(len(rows), -1, np.int64),
                "taken": np.maximum(mtimes[rows], 0) // 1_000_000_000,
                "path": np.asarray([paths[i] for i in rows], object),
                "width": widths[rows],
                "height": heights[rows],
            }
            self.index.add(ids[start : start + LOAD_BATCH], flat[pos[rows]], fields=fields)
            self.done = start_done + int(rows[-1]) + 1
            self.on_load(self.done, self.total)
        self.report.vectors += len(ok)
        self.done = start_done + self.rows[pid]
        self.on_load(self.done, self.total)
        return len(ok), len(errors) - len(ok)


def _verify(cat, index) -> list[tuple[int, int]]:
    """(run, partition) of the loaded shards the collection holds fewer vectors of than recorded
    (unrecorded in the catalog, to be loaded again); [] when the total agrees (one count)."""
    _, expected, _ = cat.loaded_totals()
    if len(index) == expected:
        return []
    short = []
    for run, _uri, _fp in cat.shard_sources():
        for pid, (vectors, _failed) in cat.loaded_shards(run).items():
            lo, hi = _shard_range(run, pid)
            if index.count(f"id >= {lo} and id < {hi}") < vectors:
                short.append((run, pid))
    with cat.transaction():
        for run, pid in short:
            cat.unmark_shard(run, pid)
    return short
