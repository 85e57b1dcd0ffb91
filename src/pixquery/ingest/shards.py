"""Embeddings as Parquet shards: `pixquery embed SOURCE --out DIR` writes them (on a Ray cluster,
for collections beyond one machine), `pixquery import DIR` loads them into a library.

    DIR/manifest.parquet       every input file once, sorted, with its partition id: written first,
                               read again by a re-run, so partitions never change
    DIR/part-000000.parquet    one shard per partition, written only once all its files are done:
                               path, size, mtime_ns, sha256, width, height, model, fingerprint,
                               embedding (fixed_size_list<float32>[dim]) and error (the reason a
                               file could not be used; its embedding is then null)

A shard appears complete or not at all: locally it is written to a hidden temp file, fsynced and
renamed; on object storage it is uploaded in one PUT (or a multipart upload, which the store
makes visible only when complete). A re-run skips the partitions whose shard exists, so a killed
job resumes where it stopped. DIR and SOURCE may be local paths or fsspec URLs (s3://, gs://,
file://); on a cluster of several machines both must be reachable from every node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pixquery import _failpoints
from pixquery.errors import PixqueryError

MANIFEST = "manifest.parquet"
SHARD_GLOB = "part-*.parquet"
FORMAT = "1"
DEFAULT_PARTITION_SIZE = 10_000  # files per shard: ~20 MB of ViT-B/32 vectors
META = b"pixquery"  # schema metadata key: a JSON object


def shard_name(partition: int) -> str:
    return f"part-{partition:06d}.parquet"


def _arrow():
    try:
        import fsspec  # noqa: F401
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ModuleNotFoundError:
        raise PixqueryError("Parquet shards need pyarrow and fsspec: pip install 'pixquery[ray]'") from None


def is_url(path: str) -> bool:
    return "://" in str(path)


# -- the shard folder ---------------------------------------------------------------------


class ShardDir:
    """A folder of shards, local or on object storage (fsspec)."""

    def __init__(self, uri: str):
        _arrow()
        import fsspec

        uri = str(uri)
        if uri.startswith("file://"):
            uri = uri[len("file://") :]
        self.uri = uri
        if is_url(uri):
            try:
                self.fs, self.root = fsspec.core.url_to_fs(uri)
            except (ImportError, ValueError) as e:
                raise PixqueryError(f"cannot open {uri}: {e}") from None
            self.local = False
        else:
            self.fs = fsspec.filesystem("file")
            self.root = os.path.abspath(os.path.expanduser(uri))
            self.local = True
        self.root = self.root.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def url(self, name: str) -> str:
        return self.path(name) if self.local else self.fs.unstrip_protocol(self.path(name))

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def makedirs(self) -> None:
        if self.local:
            os.makedirs(self.root, exist_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """One embed run per local folder at a time (flock: released by the OS if the process
        dies). On object storage there is no lock: run one job per DIR."""
        if not self.local:
            yield
            return
        self.makedirs()
        fd = os.open(self.path(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PixqueryError(
                    f"another pixquery embed is writing to {self.root}; wait for it to finish"
                ) from None
            self._sweep_temp()
            yield
        finally:
            os.close(fd)

    def _sweep_temp(self) -> None:
        """Temp files of a run that was killed while writing (only called under the lock)."""
        for name in os.listdir(self.root):
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(self.path(name))

    def write_table(self, name: str, table) -> None:
        """Write `table` as DIR/name, atomically: complete under its final name, or absent."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.local:
            tmp = self.path(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
            try:
                with open(tmp, "wb") as f:
                    pq.write_table(table, f, compression="zstd")
                    f.flush()
                    os.fsync(f.fileno())
                if name.startswith("part-"):
                    _failpoints.hit("shard/before_rename")
                os.replace(tmp, self.path(name))
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            dirfd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        else:
            # Built in memory, then one upload: an object store shows an object only once its PUT
            # (or multipart upload) completes, so no reader ever sees part of a shard.
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            data = sink.getvalue().to_pybytes()
            if name.startswith("part-"):
                _failpoints.hit("shard/before_rename")
            self.fs.pipe_file(self.path(name), data)

    def read_table(self, name: str, columns: list[str] | None = None):
        import pyarrow.parquet as pq

        with self.fs.open(self.path(name), "rb") as f:
            return pq.read_table(f, columns=columns)

    def read_metadata(self, name: str) -> dict:
        import pyarrow.parquet as pq

        with self.fs.open(self.path(name), "rb") as f:
            meta = pq.read_schema(f).metadata or {}
        return json.loads(meta.get(META, b"{}"))

    def read_footer(self, name: str) -> tuple[dict, int]:
        """(the pixquery metadata, the number of rows) of a Parquet file, from its footer alone."""
        import pyarrow.parquet as pq

        with self.fs.open(self.path(name), "rb") as f:
            md = pq.read_metadata(f)
        return json.loads((md.schema.to_arrow_schema().metadata or {}).get(META, b"{}")), md.num_rows

    def shard_ids(self) -> list[int]:
        """Partitions whose shard exists, sorted."""
        if not self.local:
            self.fs.invalidate_cache()
        out = []
        for p in self.fs.glob(self.path(SHARD_GLOB)):
            stem = p.rsplit("/", 1)[-1][len("part-") : -len(".parquet")]
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)


# -- listing ------------------------------------------------------------------------------


@dataclass
class Listing:
    """The input files, sorted by path; failures of the listing itself carry their reason."""

    source: str
    kind: str  # "folder", "file" or "list"
    root: str  # a local folder or a URL prefix
    rows: list[tuple[str, int, int, str | None]]  # (path, size, mtime_ns, error)


def _mtime_ns(info: dict) -> int:
    """Modification time of an fsspec `info` dict in ns (-1 when the store gives none)."""
    import datetime as dt

    for key in ("mtime", "LastModified", "last_modified", "updated", "modified", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)
            return int(value.timestamp() * 1_000_000) * 1000
        if isinstance(value, (int, float)):
            return int(value * 1e9) if value < 1e12 else int(value)
    return -1


def list_source(source: str) -> Listing:
    """A folder (every image below it, as `pixquery index` finds them: hidden names skipped), one
    image, or a text file listing paths or URLs (one a line; # comments; relative paths are
    relative to the list's folder). Local or any fsspec URL."""
    _arrow()
    import fsspec

    from pixquery.ingest.scan import IMAGE_EXTENSIONS, normalize_root, walk

    source = str(source)
    if source.startswith("file://"):
        source = source[len("file://") :]
    if not is_url(source):
        root = normalize_root(source)
        if os.path.isdir(root):
            errors: list[tuple[str, str]] = []
            rows = [(e.path, e.size, e.mtime_ns, None) for e in walk(root, IMAGE_EXTENSIONS, errors)]
            rows += [(p, -1, -1, reason) for p, reason in errors]
            return Listing(source, "folder", root, _sorted_unique(rows))
        if not os.path.exists(root):
            raise PixqueryError(f"{source}: no such file or folder")
        if os.path.splitext(root)[1].lower() in IMAGE_EXTENSIONS:
            st = os.stat(root)
            return Listing(source, "file", root, [(root, st.st_size, st.st_mtime_ns, None)])
        with open(root, encoding="utf-8") as f:
            entries = _list_lines(f.read())
        base = os.path.dirname(root)
        return Listing(
            source,
            "list",
            root,
            _sorted_unique(
                _stat_all(
                    [e if is_url(e) else os.path.normpath(os.path.join(base, os.path.expanduser(e))) for e in entries]
                )
            ),
        )
    try:
        fs, path = fsspec.core.url_to_fs(source)
    except (ImportError, ValueError) as e:
        raise PixqueryError(f"cannot open {source}: {e}") from None
    path = path.rstrip("/")
    try:
        if fs.isdir(path):
            found = fs.find(path, detail=True)
            rows = []
            for p, info in sorted(found.items()):
                rel = p[len(path) :].lstrip("/")
                if info.get("type", "file") != "file" or any(part.startswith(".") for part in rel.split("/")):
                    continue
                if os.path.splitext(p)[1].lower() in IMAGE_EXTENSIONS:
                    rows.append((fs.unstrip_protocol(p), int(info.get("size") or 0), _mtime_ns(info), None))
            return Listing(source, "folder", fs.unstrip_protocol(path), _sorted_unique(rows))
        if not fs.exists(path):
            raise PixqueryError(f"{source}: no such file or folder")
        if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            return Listing(source, "file", source, _stat_all([fs.unstrip_protocol(path)]))
        entries = _list_lines(fs.cat_file(path).decode("utf-8"))
    except PermissionError as e:
        raise PixqueryError(f"{source}: permission denied ({e})") from None
    base = fs.unstrip_protocol(path).rsplit("/", 1)[0]
    return Listing(
        source,
        "list",
        fs.unstrip_protocol(path),
        _sorted_unique(_stat_all([e if is_url(e) or e.startswith("/") else f"{base}/{e}" for e in entries])),
    )


def _list_lines(text: str) -> list[str]:
    """Entries of a list file; file:// URLs become plain paths (the library's paths for local files)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line[len("file://") :] if line.startswith("file://") else line)
    return out


def _stat_all(paths: list[str]) -> list[tuple[str, int, int, str | None]]:
    """(path, size, mtime_ns, error) of each: plain paths by os.stat, URLs by fsspec (threads)."""
    from concurrent.futures import ThreadPoolExecutor

    import fsspec

    def one(p: str):
        try:
            if not is_url(p):
                st = os.stat(p)
                return p, st.st_size, st.st_mtime_ns, None
            fs, inner = fsspec.core.url_to_fs(p)
            info = fs.info(inner)
            return p, int(info.get("size") or 0), _mtime_ns(info), None
        except OSError as e:
            return p, -1, -1, f"cannot read: {e.strerror or e}"

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, paths))


def _sorted_unique(rows):
    seen, out = set(), []
    for row in sorted(rows, key=lambda r: r[0]):
        if row[0] not in seen:
            seen.add(row[0])
            out.append(row)
    return out


def manifest_table(listing: Listing, partition_size: int):
    import pyarrow as pa

    rows = listing.rows
    table = pa.table(
        {
            "partition": pa.array([i // partition_size for i in range(len(rows))], pa.int32()),
            "path": pa.array([r[0] for r in rows], pa.string()),
            "size": pa.array([r[1] for r in rows], pa.int64()),
            "mtime_ns": pa.array([r[2] for r in rows], pa.int64()),
            "error": pa.array([r[3] for r in rows], pa.string()),
        }
    )
    meta = {
        "format": FORMAT,
        "source": listing.source,
        "kind": listing.kind,
        "root": listing.root,
        "partition_size": partition_size,
        "files": len(rows),
        "partitions": (len(rows) + partition_size - 1) // partition_size,
        "created": time.time(),
    }
    return table.replace_schema_metadata({META: json.dumps(meta).encode()})


# -- embed ----------------------------------------------------------------------------------


class EmbedProgress:
    """Callbacks of an embed run; the CLI's subclass draws a progress bar. All optional."""

    def planned(self, files: int, partitions: int, done_files: int, done_partitions: int) -> None: ...

    def advance(self, done: int, failed: int) -> None: ...

    def failure(self, path: str, reason: str) -> None: ...

    def stage(self, text: str) -> None: ...


@dataclass
class EmbedReport:
    files: int = 0  # in the manifest
    partitions: int = 0
    skipped_partitions: int = 0  # their shard existed already (a resumed run)
    skipped_files: int = 0
    written_partitions: int = 0
    embedded: int = 0  # in this run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), this run's
    seconds: float = 0.0
    embed_seconds: float = 0.0
    out: str = ""

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "out": self.out,
            "files": self.files,
            "partitions": self.partitions,
            "skipped_partitions": self.skipped_partitions,
            "skipped_files": self.skipped_files,
            "written_partitions": self.written_partitions,
            "embedded": self.embedded,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
        }


def load_or_write_manifest(store: ShardDir, source: str, partition_size: int | None, on_stage=None):
    """The manifest of DIR (a re-run: the same partitions as the first run), or a new one listing
    `source` (written before any shard, atomically)."""
    import pyarrow as pa  # noqa: F401

    if store.exists(MANIFEST):
        manifest = store.read_table(MANIFEST)
        meta = json.loads((manifest.schema.metadata or {}).get(META, b"{}"))
        if _same_source(meta.get("source", ""), source) is False:
            raise PixqueryError(
                f"{store.uri} holds the shards of {meta.get('source')}, not of {source}: "
                "give another --out, or the same SOURCE to resume"
            )
        if partition_size and partition_size != meta.get("partition_size"):
            raise PixqueryError(
                f"{store.uri} was started with --partition-size {meta.get('partition_size')}: "
                "resume with that size (or leave it out), or give another --out"
            )
        return manifest, meta, True
    (on_stage or (lambda s: None))(f"listing {source}")
    listing = list_source(source)
    manifest = manifest_table(listing, partition_size or DEFAULT_PARTITION_SIZE)
    store.makedirs()
    store.write_table(MANIFEST, manifest)
    return manifest, json.loads(manifest.schema.metadata[META]), False


def _same_source(a: str, b: str) -> bool:
    def norm(s: str) -> str:
        s = s[len("file://") :] if s.startswith("file://") else s
        return s.rstrip("/") if is_url(s) else os.path.abspath(os.path.expanduser(s))

    return norm(a) == norm(b)


def shard_table(rows, info, partition: int):
    """The shard of one partition from embed_stream's result rows (any order, no duplicates)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = rows.take(pc.sort_indices(rows, sort_keys=[("path", "ascending")]))
    n = rows.num_rows
    emb_type = pa.list_(pa.float32(), info.dim)
    table = pa.table(
        {
            "path": rows.column("path").cast(pa.string()),
            "size": rows.column("size").cast(pa.int64()),
            "mtime_ns": rows.column("mtime_ns").cast(pa.int64()),
            "sha256": rows.column("sha256").cast(pa.string()),
            "width": rows.column("width").cast(pa.int32()),
            "height": rows.column("height").cast(pa.int32()),
            "model": pa.array([info.name] * n, pa.string()).dictionary_encode(),
            "fingerprint": pa.array([info.fingerprint] * n, pa.string()).dictionary_encode(),
            "embedding": rows.column("embedding").cast(emb_type),
            "error": rows.column("error").cast(pa.string()),
            "partition": pa.array([partition] * n, pa.int32()),
        }
    )
    meta = {
        "format": FORMAT,
        "partition": partition,
        "model": info.name,
        "model_spec": info.spec,
        "precision": info.precision,
        "fingerprint": info.fingerprint,
        "dim": info.dim,
    }
    return table.replace_schema_metadata({META: json.dumps(meta).encode()})


def embed_to_shards(
    source: str,
    out: str,
    *,
    model: str,
    precision: str = "fp32",
    batch_size: int = 32,
    partition_size: int | None = None,
    address: str | None = None,
    concurrency: int | None = None,
    num_gpus: float | None = None,
    progress: EmbedProgress | None = None,
    stream: Callable | None = None,
) -> EmbedReport:
    """Embed every image of `source` into Parquet shards in `out` (see the module doc), on Ray:
    address None starts a local Ray for this run. Resumes a killed run: partitions whose shard
    exists are skipped. Files that cannot be used are in their shard with the reason and in the
    report. stream: embed_stream's stand-in (tests, other engines)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pixquery.ingest.executors import ray as ray_exec

    progress = progress or EmbedProgress()
    t0 = time.perf_counter()
    report = EmbedReport(out=out)
    if partition_size is not None and partition_size < 1:
        raise PixqueryError("--partition-size must be >= 1")
    store = ShardDir(out)
    info = ray_exec.describe_model(model, precision)
    with store.lock():
        manifest, meta, resumed = load_or_write_manifest(store, source, partition_size, progress.stage)
        done = set(store.shard_ids())
        if done:
            other = store.read_metadata(shard_name(min(done))).get("fingerprint")
            if other != info.fingerprint:
                raise PixqueryError(
                    f"{store.uri} holds shards of another model (fingerprint {other}, this "
                    f"model's is {info.fingerprint}): give another --out, or the same model to resume"
                )
        parts = manifest.column("partition").to_pylist()
        counts: dict[int, int] = {}
        for p in parts:
            counts[p] = counts.get(p, 0) + 1
        report.files, report.partitions = manifest.num_rows, len(counts)
        report.skipped_partitions = len(done & set(counts))
        report.skipped_files = sum(counts[p] for p in done if p in counts)
        progress.planned(report.files, report.partitions, report.skipped_files, report.skipped_partitions)
        pending = manifest.filter(pc.invert(pc.is_in(manifest.column("partition"), pa.array(sorted(done), pa.int32()))))
        if pending.num_rows == 0:
            report.seconds = time.perf_counter() - t0
            return report

        shards = _Assembler(store, info, counts, report, progress)
        te = time.perf_counter()
        with ray_exec.connect(address) if stream is None else contextlib.nullcontext():
            batches = (stream or ray_exec.embed_stream)(
                pending, info, batch_size=batch_size, concurrency=concurrency, num_gpus=num_gpus
            )
            # closing: Ray Data's executor stops before Ray does, also on Ctrl-C.
            with contextlib.closing(batches) if hasattr(batches, "close") else contextlib.nullcontext():
                for batch in batches:
                    shards.add(batch)
        report.embed_seconds = time.perf_counter() - te
        shards.check_complete()
    report.seconds = time.perf_counter() - t0
    return report


class _Assembler:
    """Collects result rows per partition and writes a partition's shard as soon as it holds each
    of the partition's files once. Results come in any order; a row Ray hands back twice (a batch
    redone after a failure) counts once."""

    def __init__(self, store: ShardDir, info, counts: dict[int, int], report: EmbedReport, progress: EmbedProgress):
        self.store, self.info, self.counts, self.report, self.progress = store, info, counts, report, progress
        self.buffers: dict[int, list] = {}
        self.seen: dict[int, set] = {}
        self.done = report.skipped_files

    def add(self, batch) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        for pid in pc.unique(batch.column("partition")).to_pylist():
            part = batch.filter(pc.equal(batch.column("partition"), pid))
            have = self.seen.setdefault(pid, set())
            keep = []
            for i, path in enumerate(part.column("path").to_pylist()):
                if path not in have:
                    have.add(path)
                    keep.append(i)
            if not keep:
                continue
            part = part.take(pa.array(keep, pa.int64()))
            self.buffers.setdefault(pid, []).append(part)
            for path, reason in zip(part.column("path").to_pylist(), part.column("error").to_pylist()):
                if reason is None:
                    self.report.embedded += 1
                else:
                    self.report.failed.append((path, reason))
                    self.progress.failure(path, reason)
            self.done += len(keep)
            if len(have) == self.counts[pid]:
                rows = pa.concat_tables(self.buffers.pop(pid))
                self.store.write_table(shard_name(pid), shard_table(rows, self.info, pid))
                self.report.written_partitions += 1
                _failpoints.hit("embed/after_shard")
        self.progress.advance(self.done, len(self.report.failed))

    def check_complete(self) -> None:
        if self.buffers:
            missing = sum(self.counts[p] - len(self.seen[p]) for p in self.buffers)
            raise RuntimeError(f"the Ray job ended with {missing} files of {len(self.buffers)} partitions not returned")


# -- import ---------------------------------------------------------------------------------


@dataclass
class ImportReport:
    shards: int = 0
    imported: int = 0  # images whose row and embedding were written
    unchanged: int = 0  # already in the library as that file version, with this model's embedding
    failed: list[tuple[str, str]] = field(default_factory=list)  # files the embed run could not use
    missing_partitions: list[int] = field(default_factory=list)  # in the manifest, without a shard
    model: str = ""
    model_spec: str = ""
    library_model: str = ""  # what the library searches with, when that is another model
    seconds: float = 0.0
    index: object = None  # SyncReport

    def to_dict(self) -> dict:
        idx = self.index
        return {
            "shards": self.shards,
            "imported": self.imported,
            "unchanged": self.unchanged,
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "missing_partitions": self.missing_partitions,
            "model": self.model,
            "model_spec": self.model_spec,
            "seconds": round(self.seconds, 3),
            "index": None
            if idx is None
            else {
                "kind": idx.kind,
                "added": idx.added,
                "removed": idx.removed,
                "total": idx.total,
                "rebuilt": idx.rebuilt,
            },
        }


def import_shards(
    lib, uri: str, *, on_stage: Callable[[str], None] | None = None, on_shard: Callable[[int, int], None] | None = None
) -> ImportReport:
    """Load the shards in `uri` into the Library `lib`: image rows, this model's embeddings (each
    recording the file version it was made from), then the index brought up to date. Idempotent:
    a file already in the library as the same version with this model's embedding is left alone,
    and so is one the library holds in a newer version (indexed since the shards were made)."""
    import numpy as np

    from pixquery import indexes
    from pixquery.ingest import store_only
    from pixquery.ingest.sync import sync_index

    store_only.refuse(lib, "import")
    t0 = time.perf_counter()
    stage = on_stage or (lambda s: None)
    store = ShardDir(uri)
    report = ImportReport()
    ids = store.shard_ids()
    if not ids:
        raise PixqueryError(f"no shards (part-*.parquet) in {store.uri}: run pixquery embed SOURCE --out {uri} first")
    metas = {pid: store.read_metadata(shard_name(pid)) for pid in ids}
    first = metas[ids[0]]
    fingerprints = {m.get("fingerprint") for m in metas.values()}
    if len(fingerprints) != 1 or None in fingerprints:
        raise PixqueryError(f"{store.uri} mixes shards of several models ({', '.join(map(str, fingerprints))})")
    report.model, report.model_spec = first.get("model", ""), first.get("model_spec", "")
    manifest_meta = {}
    if store.exists(MANIFEST):
        manifest_parts = store.read_table(MANIFEST, columns=["partition"]).column("partition")
        expected = set(np.unique(manifest_parts.to_numpy()).tolist()) if len(manifest_parts) else set()
        report.missing_partitions = sorted(expected - set(ids))
        manifest_meta = store.read_metadata(MANIFEST)

    cat = lib.catalog
    with lib._write_lock():
        with cat.transaction():
            model = cat.ensure_model(first["model"], first["fingerprint"], int(first["dim"]))
            if model.dim == 0:  # made by set_threshold before anything was embedded
                cat.set_model_shape(model.id, first["model"], int(first["dim"]))
                model = cat.model(model.id)
            current = cat.get_setting("model")
            if current is None:
                # A new library searches with the model the shards were made with.
                cat.set_setting("model", first["model_spec"])
                cat.set_setting("precision", first.get("precision") or "fp32")
            elif current != first["model_spec"]:
                report.library_model = current
            root = manifest_meta.get("root", "")
            if manifest_meta.get("kind") == "folder" and not is_url(root) and os.path.isdir(root):
                # A later plain `pixquery index` rescans it (only when this machine has it: a folder
                # that is not there would make that rescan an error).
                cat.add_folder(root)
        for n, pid in enumerate(ids, 1):
            stage(f"importing {shard_name(pid)}")
            table = store.read_table(shard_name(pid))
            errors = table.column("error").to_pylist()
            paths = table.column("path").to_pylist()
            for path, reason in zip(paths, errors):
                if reason is not None:
                    report.failed.append((path, reason))
            ok = [i for i, e in enumerate(errors) if e is None]
            if ok:
                sizes = table.column("size").to_pylist()
                mtimes = table.column("mtime_ns").to_pylist()
                shas = table.column("sha256").to_pylist()
                widths = table.column("width").to_pylist()
                heights = table.column("height").to_pylist()
                emb = table.column("embedding").combine_chunks()
                vectors = emb.flatten().to_numpy(zero_copy_only=False).reshape(-1, int(first["dim"]))
                # Null rows (failures) have no values in the flattened child: map row -> position.
                pos = np.cumsum(~np.asarray(emb.is_null().to_numpy(zero_copy_only=False))) - 1
                have = cat.image_versions_for_import(model.id, [paths[i] for i in ok])
                changed = []
                with cat.transaction():
                    for i in ok:
                        version = (sizes[i], mtimes[i], shas[i])
                        prev = have.get(paths[i])
                        if prev is not None and prev[4] and (prev[1:4] == version or prev[2] > mtimes[i]):
                            report.unchanged += 1
                            continue
                        image_id = cat.upsert_image(paths[i], sizes[i], mtimes[i], shas[i], widths[i], heights[i])
                        cat.put_image_embedding(model.id, image_id, vectors[pos[i]], source=version)
                        changed.append(image_id)
                    cat.mark_stale(image_ids=changed)
                report.imported += len(changed)
            report.shards += 1
            if on_shard:
                on_shard(n, len(ids))

        saved = json.loads(cat.get_setting("index") or "null") or {"kind": indexes.DEFAULT_KIND, "params": {}}

        def calibration_queries():
            from pixquery.encoders.registry import load_encoder
            from pixquery.query_sample import QUERIES

            return load_encoder(first["model_spec"], precision=first.get("precision") or "fp32").encode_texts(QUERIES)

        report.index = sync_index(
            cat,
            lib.path,
            model,
            saved["kind"],
            saved["params"],
            on_stage=stage,
            calibration_queries=calibration_queries,
        )
        with cat.transaction():
            cat.set_setting("index", json.dumps({"kind": saved["kind"], "params": saved["params"]}, sort_keys=True))
    report.seconds = time.perf_counter() - t0
    return report


def iter_shard_rows(uri: str, columns: Iterable[str] | None = None):
    """Every shard of `uri` as a pyarrow Table, in partition order (for checks and tools)."""
    store = ShardDir(uri)
    for pid in store.shard_ids():
        yield pid, store.read_table(shard_name(pid), columns=list(columns) if columns else None)
