"""Milvus (pymilvus `MilvusClient`): the vectors live in a Milvus collection, embedded or served.

Two modes, chosen by `uri`:

* `uri=""` (the default): **embedded milvus-lite**. The index owns a private milvus-lite database
  file in a temporary folder while it is open; `save(path)` stops its milvus-lite process, copies
  the database file into the index folder as a part (`<token>.milvus.db`, beside manifest.json) and
  restarts it; `load(path)` copies that part to a new private file. So an embedded index behaves
  like every other kind: a loaded index changing never changes the saved one. milvus-lite 2.5.x
  bundles the real Milvus C++ engine but has only FLAT and IVF_FLAT (plus AUTOINDEX).
* `uri="http://host:port"` (a Milvus standalone or cluster, or `milvus-lite` serving a file on a
  port), or a path to a `.db` file the user keeps elsewhere: **external**. The vectors live there;
  `save(path)` writes only a manifest naming the uri and the collection, and `load(path)` attaches
  to that collection again. An external collection is shared: a loaded index and the one that saved
  it are the same collection (the contract's "a loaded copy is private" does not hold).

Besides id and vector, every row carries the scalar fields that search filters need (`FIELDS`:
media kind, folder id, date taken), so a filtered search (`search(..., filter="media == 0")`,
Milvus's boolean expression syntax) runs inside Milvus instead of fetching and discarding. `add`
takes them as `fields={"media": array, ...}`; a field not given is stored as its default.

An external index is **shared** (`shared` is True): other processes (several `pixquery serve`)
read the same collection, and a write is visible to them at once. The library's index sync
therefore treats the collection as a replica of the catalog: `ids()` lists what it holds, so a
sync after a crash between a Milvus write and the catalog commit makes the two equal again, and
`drop()` deletes a collection no catalog row names any more.

Vectors are L2-normalised by the caller and scored by inner product (metric IP), so scores are
cosines like every other kind's. Writes go in batches of at most `batch` rows (2,000: milvus-lite
2.5 slows sharply past that per call). Consistency "Strong" (the default) makes every search see
every earlier write, which the contract needs; "Bounded" or "Eventually" are faster on a cluster.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import tarfile
import tempfile
import time
import warnings
import weakref
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pymilvus  # noqa: F401  (ImportError here -> "install pixquery[milvus]")
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from pixquery.errors import IndexStoreError
from pixquery.indexes.base import (
    as_ids,
    as_vectors,
    empty_results,
    pad_results,
    read_bundle,
    upsert_batch,
    write_bundle,
)

INDEX_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN", "AUTOINDEX")
CONSISTENCY = ("Strong", "Bounded", "Session", "Eventually")
TOKEN_ENV = "PIXQUERY_MILVUS_TOKEN"  # the server's token when the config gives none (it is never saved)
MAX_BATCH = 2000  # rows per insert/upsert/delete call
MAX_TOPK = 16384  # Milvus's limit on `limit` (and on nq per search call)
DB_PART = "milvus.db"  # milvus-lite 2.5: one file
DB_TAR_PART = "milvus.db.tar"  # milvus-lite 3.x: the ".db" is a folder, saved as one tar part
ID_FIELD, VECTOR_FIELD = "id", "vector"
# Scalar fields stored beside each vector for filtered search: name -> (Milvus type, numpy type,
# value when not given). media: 0 photo, 1 a region of a photo, 2 a video frame or region
# (catalog.MEDIA_*); folder: the catalog's folder id (-1 unknown); taken: when the photo was taken,
# unix seconds (the catalog gives the file's modification time until it reads EXIF dates; 0 unknown).
FIELDS = {
    "media": (DataType.INT8, np.int8, 0),
    "folder": (DataType.INT64, np.int64, -1),
    "taken": (DataType.INT64, np.int64, 0),
}
# Only in a collection made with `store_paths` (a store-only library, which has no catalog row per
# image): each row also carries the file it was made from, so search results name their files
# without the catalog (`get(ids, ["path", ...])`).
FILE_FIELDS = {
    "path": (DataType.VARCHAR, object, ""),
    "width": (DataType.INT32, np.int32, 0),
    "height": (DataType.INT32, np.int32, 0),
}
MAX_PATH = 65535  # bytes: Milvus's longest VARCHAR


# Measured (bench/results/indexes-milvus-*.md): milvus-lite 2.5 keeps a collection in one segment it
# never seals, so the index asked for is never built: up to 99,999 rows every search is exact; from
# 100,000 rows it answers from Milvus's interim index, whatever nlist / nprobe say, at recall@10
# 0.26-0.32 on CLIP text queries. FLAT stays exact at any size.
LITE_INDEX_WARNING = (
    "milvus-lite ignores index_type {} (it never builds the index asked for): past 100,000 vectors its "
    "interim index answers text queries at recall@10 ~0.3. Use index_type FLAT (exact) with milvus-lite, "
    "or a Milvus server for IVF / HNSW."
)


@dataclass
class Config:
    uri: str = ""  # "" = embedded milvus-lite saved inside the index folder; or http://host:port, or a .db path
    collection: str = ""  # "" = "pixquery" embedded, a fresh "pixquery_<hex>" on a server
    index_type: str = ""  # "" = FLAT on milvus-lite (see LITE_INDEX_WARNING), IVF_FLAT on a server
    nlist: int = 128  # IVF_*: clusters
    nprobe: int = 16  # IVF_*: clusters searched per query (nprobe = nlist: exact)
    M: int = 16  # HNSW: links per node; IVF_PQ: sub-quantisers (0 = dim / 4)
    ef_construction: int = 200  # HNSW
    ef: int = 128  # HNSW search (raised to k when k is larger)
    search_list: int = 100  # DISKANN search list size
    consistency: str = "Strong"
    shards: int = 1  # collection shards (a cluster spreads writes over them)
    replicas: int = 1  # in-memory replicas (a cluster with several query nodes)
    token: str = ""  # "user:password" or an API key for a server; never saved ("": $PIXQUERY_MILVUS_TOKEN)
    timeout: int = 60  # seconds a call may take, retries of an unreachable server included
    batch: int = MAX_BATCH
    store_paths: bool = False  # rows also carry FILE_FIELDS (path, width, height): a store-only library

    def __post_init__(self):
        self.index_type = str(self.index_type).upper() or ("FLAT" if self.lite else "IVF_FLAT")
        if self.lite and self.index_type in ("IVF_FLAT", "AUTOINDEX"):
            warnings.warn(LITE_INDEX_WARNING.format(self.index_type), stacklevel=3)
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {', '.join(INDEX_TYPES)}, not {self.index_type!r}")
        if self.consistency not in CONSISTENCY:
            raise ValueError(f"consistency must be one of {', '.join(CONSISTENCY)}, not {self.consistency!r}")
        if not 1 <= int(self.batch) <= MAX_BATCH:
            raise ValueError(f"batch must be 1..{MAX_BATCH}")
        self.timeout = int(self.timeout)
        if self.timeout < 1:
            raise ValueError("timeout must be >= 1 second")
        for name in ("nlist", "nprobe", "ef_construction", "ef", "search_list", "shards", "replicas"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")

    # the library's sync loads a new index of this kind in batches (add after add), not all at once
    bulk_load: ClassVar[bool] = True

    @property
    def embedded(self) -> bool:
        return self.uri == ""

    @property
    def lite(self) -> bool:
        """milvus-lite in this process's care: the embedded file, or a .db path (pymilvus's rule)."""
        return self.uri == "" or self.uri.endswith(".db")

    @property
    def shared(self) -> bool:
        return not self.embedded


class _Client:
    """A MilvusClient whose calls give up after about `timeout` seconds (pymilvus alone retries an
    unreachable server for about 3.5 minutes) and fail with an IndexStoreError that names the
    server and the collection, which the CLI prints as one line and `pixquery serve` answers as 503.

    A call that fails is tried once more on a fresh connection (a long-lived reader, such as a
    server process, outlives restarts of Milvus, and pymilvus does not reconnect by itself). The
    reconnect gets what is left of the call's `timeout` (at least a second), so a dead server
    costs one timeout, not two. After reconnecting, the collection is loaded again before the
    retry: a restarted server may bring it back released (milvus-lite 3 does). pymilvus shares one
    connection per uri within a process: a reconnect here replaces it for every index of that uri,
    and theirs recover the same way."""

    UNTIMED = frozenset({"close", "prepare_index_params", "create_schema"})

    def __init__(self, uri: str, collection: str, timeout: int, token: str = "", replicas: int = 1):
        self._where = f"Milvus at {uri}" + (f" (collection {collection})" if collection else "")
        self._collection, self._replicas = collection, int(replicas)
        # an int: pymilvus's retry loop ignores a float timeout and retries 75 times (~3.5 min)
        self._timeout = int(timeout)
        self._args = (uri, token)
        self._client = None
        self._connect(self._timeout)

    def _connect(self, timeout: float) -> None:
        uri, token = self._args
        try:
            self._client = MilvusClient(uri=uri, timeout=timeout, **({"token": token} if token else {}))
        except MilvusException as e:
            raise IndexStoreError(
                f"cannot connect to {self._where}: {_reason(e)}. Is the server running, "
                "and is the uri right (--param uri=http://HOST:19530)?"
            ) from None

    def __getattr__(self, name: str):
        if self._client is None:  # the last reconnect failed: connect first (the server may be back)
            self._connect(self._timeout)
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            start = time.monotonic()
            if name not in self.UNTIMED:
                kwargs.setdefault("timeout", self._timeout)
            try:
                return method(*args, **kwargs)
            except MilvusException as e:
                if name in self.UNTIMED:
                    raise IndexStoreError(f"{self._where}: {name} failed: {_reason(e)}") from None
                failed = e
            left = max(1.0, self._timeout - (time.monotonic() - start))
            if not self._reconnect(left):
                raise IndexStoreError(f"{self._where}: {name} failed: {_reason(failed)}") from None
            self._load_again()
            try:  # the server came back (restarted)
                return getattr(self._client, name)(*args, **kwargs)
            except MilvusException as e:
                raise IndexStoreError(f"{self._where}: {name} failed: {_reason(e)}") from None

        return call

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _load_again(self) -> None:
        """Load the collection after a reconnect (a no-op where it is loaded; absent: nothing)."""
        name, client = self._collection, self._client
        try:
            if name and client.has_collection(name, timeout=self._timeout):
                replicas = {"replica_number": self._replicas} if self._replicas > 1 else {}
                client.load_collection(name, timeout=self._timeout, **replicas)
        except MilvusException:
            pass  # the retry that follows says what is wrong

    def _reconnect(self, timeout: float) -> bool:
        """A fresh connection, if the server answers within `timeout` seconds."""
        try:
            self._client.close()
        except Exception:
            pass
        self._client = None
        try:
            self._connect(timeout)
            return True
        except IndexStoreError:
            return False


def _reason(e: MilvusException) -> str:
    text = str(getattr(e, "message", "") or e)
    return text.splitlines()[0][:300] if text else type(e).__name__


def _release_lite(db_file: Path) -> None:
    """Stop the milvus-lite process serving `db_file` (it writes everything to the file first)."""
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    if any(k in server_manager_instance._servers for k in (str(Path(db_file).resolve()), os.path.abspath(db_file))):
        server_manager_instance.release_server(str(db_file))


def _close(client: _Client | None, db_file: Path | None, tmpdir: Path | None) -> None:
    if client is not None:
        try:
            client.close()
        except Exception:
            pass
    if db_file is not None:
        _release_lite(db_file)
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)


class Index:
    kind = "milvus"
    max_k = MAX_TOPK  # the most hits one search may ask for (indexes/filtered.py searches wider up to it)
    scalar_fields = tuple(FIELDS)  # stored beside each vector: add(..., fields=...)

    def __init__(self, dim: int, config: Config | None = None, *, _db_file: Path | None = None):
        self.dim = int(dim)
        config = config or Config()
        if not config.collection:
            name = "pixquery" if config.embedded else f"pixquery_{secrets.token_hex(6)}"
            config = replace(config, collection=name)
        self.config = config
        self._tmpdir: Path | None = None
        self._db: Path | None = None
        if config.embedded:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="pixquery-milvus-"))
            self._db = self._tmpdir / DB_PART
            if _db_file is not None and _db_file.name.endswith(".tar"):
                with tarfile.open(_db_file) as tar:
                    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                    tar.extractall(self._db, **safe)
            elif _db_file is not None:
                shutil.copyfile(_db_file, self._db)
        self._client: _Client | None = None
        self._connect()
        self._finalizer = weakref.finalize(self, _close, None, self._db, self._tmpdir)
        self._ensure_collection()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        uri = str(self._db) if self.config.embedded else self.config.uri
        # the token is never saved: a process that loads a saved index (pixquery serve, a later
        # pixquery index) gets it from the environment
        token = self.config.token or ("" if self.config.embedded else os.environ.get(TOKEN_ENV, ""))
        self._client = _Client(uri, self.config.collection, self.config.timeout, token, self.config.replicas)

    def close(self) -> None:
        """Disconnect; an embedded index also stops its milvus-lite process and deletes its
        private file (save first). Called at garbage collection too."""
        client, self._client = self._client, None
        _close(client, None, None)
        self._finalizer()

    def _ensure_collection(self) -> None:
        c, name = self._client, self.config.collection
        self._fields = tuple(FIELDS) + (tuple(FILE_FIELDS) if self.config.store_paths else ())
        if c.has_collection(name):
            described = c.describe_collection(name)["fields"]
            # a collection made before the scalar fields existed keeps working without them
            self._fields = tuple(f["name"] for f in described if f["name"] in FIELDS or f["name"] in FILE_FIELDS)
            if self.config.store_paths and "path" not in self._fields:
                raise IndexStoreError(
                    f"Milvus collection {name!r} has no path field: it was not made for a "
                    "store-only library (give another collection)"
                )
            field = next(f for f in described if f["name"] == VECTOR_FIELD)
            dim = int(field.get("params", {}).get("dim", self.dim))
            if dim != self.dim:
                raise ValueError(f"Milvus collection {name!r} holds {dim}-d vectors, not {self.dim}-d")
            c.load_collection(name)
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        for field_name, (dtype, _, _) in FIELDS.items():
            schema.add_field(field_name, dtype)
        if self.config.store_paths:
            for field_name, (dtype, _, _) in FILE_FIELDS.items():
                schema.add_field(field_name, dtype, **({"max_length": MAX_PATH} if dtype == DataType.VARCHAR else {}))
        index_params = c.prepare_index_params()
        index_params.add_index(
            field_name=VECTOR_FIELD,
            index_type=self.config.index_type,
            metric_type="IP",
            params=self._build_params(),
        )
        extra = {}
        if self.config.shards > 1:
            extra["num_shards"] = self.config.shards
        try:
            c.create_collection(
                name, schema=schema, index_params=index_params, consistency_level=self.config.consistency, **extra
            )
        except (MilvusException, IndexStoreError) as e:  # e.g. milvus-lite 2.5 has no HNSW: say so in one line
            raise self._index_type_error(e) from None
        if self.config.replicas > 1:
            c.release_collection(name)
            c.load_collection(name, replica_number=self.config.replicas)

    def _index_type_error(self, e: Exception) -> IndexStoreError:
        """The engine refused the collection (its index type, or that type's params): drop the
        half-made collection (created, then its index refused), and name the index type and the engine."""
        c, name = self._client, self.config.collection
        try:
            if c.has_collection(name) and not c.list_indexes(name):  # never one someone else made whole
                c.drop_collection(name)
        except Exception:
            pass
        if self.config.embedded:
            try:
                from importlib.metadata import version

                engine = f"embedded milvus-lite {version('milvus-lite')}"
            except Exception:
                engine = "embedded milvus-lite"
        else:
            engine = f"the Milvus server at {self.config.uri}"
        return IndexStoreError(
            f"index kind 'milvus': {engine} refused collection {self.config.collection!r} with index_type "
            f"{self.config.index_type} {self._build_params()}: {str(getattr(e, 'message', e)).rstrip(': ')}"
        )

    def _build_params(self) -> dict:
        t, cfg = self.config.index_type, self.config
        if t in ("IVF_FLAT", "IVF_SQ8"):
            return {"nlist": cfg.nlist}
        if t == "IVF_PQ":
            m = cfg.M if cfg.M and self.dim % cfg.M == 0 else max(1, self.dim // 4)
            return {"nlist": cfg.nlist, "m": m, "nbits": 8}
        if t == "HNSW":
            return {"M": cfg.M, "efConstruction": cfg.ef_construction}
        return {}

    def _search_params(self, k: int) -> dict:
        t, cfg = self.config.index_type, self.config
        if t.startswith("IVF_"):
            params = {"nprobe": min(cfg.nprobe, cfg.nlist)}
        elif t == "HNSW":
            params = {"ef": max(cfg.ef, k)}
        elif t == "DISKANN":
            params = {"search_list": max(cfg.search_list, k)}
        else:
            params = {}
        return {"metric_type": "IP", "params": params}

    # ------------------------------------------------------------------ shared collections
    @property
    def shared(self) -> bool:
        """True when the vectors live on a server other processes read too (not a private file)."""
        return not self.config.embedded

    def ids(self) -> np.ndarray:
        """Every id in the collection, sorted (a scan: used to reconcile it with the catalog)."""
        quiet = logging.getLogger("pymilvus")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # the iterator warns when milvus-lite has no MVCC timestamp
        it = self._client.query_iterator(
            self.config.collection,
            batch_size=MAX_TOPK,
            filter="",
            output_fields=[ID_FIELD],
            consistency_level=self.config.consistency,
        )
        parts = []
        try:
            while True:
                rows = it.next()
                if not rows:
                    break
                parts.append(np.fromiter((r[ID_FIELD] for r in rows), np.int64, len(rows)))
        finally:
            it.close()
            quiet.setLevel(level)
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int64)

    def get(self, ids, fields) -> dict[int, dict]:
        """id -> {field: value} of the given ids the collection holds (e.g. the path of each hit
        of a store-only collection)."""
        ids = np.unique(as_ids(ids)).tolist()
        out: dict[int, dict] = {}
        for start in range(0, len(ids), MAX_BATCH):
            rows = self._client.get(
                self.config.collection, ids=ids[start : start + MAX_BATCH], output_fields=list(fields)
            )
            for r in rows:
                out[int(r[ID_FIELD])] = {f: r.get(f) for f in fields}
        return out

    def wait_until_indexed(self, timeout: float = 3600) -> None:
        """Seal what was written (flush) and wait until the server's index covers every row: until
        then a server answers the rows it has not indexed yet by brute force (exact, slower).
        milvus-lite never builds its index (LITE_INDEX_WARNING): it returns at once there."""
        if self.config.lite:
            return
        self._client.flush(self.config.collection)
        deadline = time.monotonic() + timeout
        while True:
            d = self._client.describe_index(self.config.collection, VECTOR_FIELD)
            if int(d.get("pending_index_rows", 0)) == 0 and int(d.get("indexed_rows", 0)) >= int(
                d.get("total_rows", 0)
            ):
                return
            if time.monotonic() > deadline:
                raise IndexStoreError(
                    f"Milvus at {self.config.uri}: the {self.config.index_type} index of "
                    f"{self.config.collection} is not built after {timeout:.0f} s: {d}"
                )
            time.sleep(0.5)

    def drop(self) -> None:
        """Delete the collection (an index a rebuild replaced)."""
        self._client.drop_collection(self.config.collection)

    # ------------------------------------------------------------------ contract
    def __len__(self) -> int:
        return self.count()

    def count(self, filter: str = "") -> int:
        """Rows matching a boolean expression (all rows: ""), e.g. "id >= 0 and id < 1000"."""
        res = self._client.query(
            self.config.collection, filter=filter, output_fields=["count(*)"], consistency_level=self.config.consistency
        )
        return int(res[0]["count(*)"]) if res else 0

    def params(self) -> dict:
        p = asdict(self.config)
        p.pop("token")  # a credential is never written to the catalog or a manifest
        return p

    def add(self, ids, vectors, fields: dict[str, np.ndarray] | None = None) -> None:
        raw_ids = as_ids(ids)
        columns = {k: v for k, v in self._field_columns(raw_ids, fields, self._fields).items() if k in self._fields}
        ids, vectors = upsert_batch(raw_ids, vectors, self.dim)
        if len(ids) != len(raw_ids):  # an id given twice: its last row wins, fields included
            last = {int(i): n for n, i in enumerate(raw_ids.tolist())}
            keep = np.asarray([last[int(i)] for i in ids.tolist()], np.int64)
            columns = {name: col[keep] for name, col in columns.items()}
        b = self.config.batch
        for start in range(0, len(ids), b):
            chunk = slice(start, start + b)
            cols = {name: col[chunk].tolist() for name, col in columns.items()}
            rows = [
                {ID_FIELD: i, VECTOR_FIELD: v, **{name: cols[name][n] for name in cols}}
                for n, (i, v) in enumerate(zip(ids[chunk].tolist(), vectors[chunk].tolist()))
            ]
            self._client.upsert(self.config.collection, rows)

    @staticmethod
    def _field_columns(ids: np.ndarray, fields: dict | None, have: tuple = ()) -> dict[str, np.ndarray]:
        fields = dict(fields or {})
        known = {**FIELDS, **{k: v for k, v in FILE_FIELDS.items() if k in have}}
        unknown = set(fields) - set(known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; Milvus rows carry {', '.join(known)}")
        out = {}
        for name, (_, np_type, default) in known.items():
            col = np.asarray(fields[name], dtype=np_type) if name in fields else np.full(len(ids), default, np_type)
            if col.shape != (len(ids),):
                raise ValueError(f"field {name!r} has {col.shape[0] if col.ndim else 1} values for {len(ids)} ids")
            out[name] = col
        return out

    def remove(self, ids) -> None:
        ids = as_ids(ids)
        ids = np.unique(ids)
        b = self.config.batch
        for start in range(0, len(ids), b):
            self._client.delete(self.config.collection, ids=ids[start : start + b].tolist())

    def search(self, queries, k: int, filter: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Best-first hits; `filter` is a Milvus boolean expression over FIELDS (e.g.
        "media == 0 and taken >= 1700000000"), evaluated inside Milvus before ranking."""
        queries = as_vectors(queries, self.dim)
        k = int(k)
        if k < 1:
            raise ValueError("k must be >= 1")
        if not len(queries):
            return empty_results(0, k)
        if k > MAX_TOPK:
            raise ValueError(f"Milvus returns at most {MAX_TOPK} hits per query (k={k})")
        scores = np.full((len(queries), k), -np.inf, np.float32)
        found = np.full((len(queries), k), -1, np.int64)
        step = max(1, min(MAX_TOPK // k, 1024))  # nq * k bounded per call
        for start in range(0, len(queries), step):
            res = self._client.search(
                self.config.collection,
                data=queries[start : start + step].tolist(),
                limit=k,
                search_params=self._search_params(k),
                filter=filter,
                output_fields=[],
                consistency_level=self.config.consistency,
            )
            for row, hits in enumerate(res, start):
                n = len(hits)
                if n:
                    found[row, :n] = [h["id"] for h in hits]
                    scores[row, :n] = [h["distance"] for h in hits]
        # Milvus orders by score; equal scores keep its order. Sort stably to be sure of best-first.
        order = np.argsort(-scores, axis=1, kind="stable")
        return pad_results(np.take_along_axis(scores, order, 1), np.take_along_axis(found, order, 1), k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        state = {"collection": self.config.collection}
        if not self.config.embedded:
            self._client.flush(self.config.collection)
            write_bundle(path, self.kind, self.dim, self.params(), state)
            return
        # embedded: stop milvus-lite so the file is complete, copy it in as a part, restart
        self._client.flush(self.config.collection)
        self._client.close()
        self._client = None
        _release_lite(self._db)
        if self._db.is_dir():
            part = {DB_TAR_PART: self._write_tar}
        else:
            part = {DB_PART: lambda tmp: shutil.copyfile(self._db, tmp)}
        try:
            write_bundle(path, self.kind, self.dim, self.params(), state, part)
        finally:
            self._connect()
            self._client.load_collection(self.config.collection)

    def _write_tar(self, tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            for entry in sorted(self._db.iterdir()):
                tar.add(entry, arcname=entry.name)

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> Index:
        """Attach to the collection a saved index names; an embedded one gets a private copy of
        its database file (`mmap` is ignored: Milvus holds its own memory)."""
        b = read_bundle(Path(path), cls.kind)
        config = Config(**b.params)
        if config.embedded:
            part = DB_TAR_PART if b.has_part(DB_TAR_PART) else DB_PART
            return cls(b.dim, config, _db_file=b.part(part))
        return cls(b.dim, config)


@atexit.register
def _stop_all_lite() -> None:
    """Stop every embedded milvus-lite process this process started before the interpreter exits
    (their objects' finalizers may not run in order at exit)."""
    try:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_all()
    except Exception:
        pass
