"""Embedding on a Ray cluster (Ray Data): the plumbing shared by `pixquery embed --engine ray` and,
later, the local library's `index --engine ray`.

    with connect(address):                       # None: a local Ray for this run, stopped after
        for table in embed_stream(files, "ViT-B-32"):
            ...                                  # pyarrow Tables, in any order, as they finish

The flow: file rows (path, size, mtime_ns, any extra columns such as a partition id)
  -> decode, as CPU tasks: read the bytes once through fsspec (local paths, s3://, gs://), sha256
     them, decode_file(draft) + normalize, exactly as the local pipeline's decode_job; a file that
     cannot be used becomes its (path, reason), the same reason the local pipeline gives
  -> encode, in an actor pool (map_batches with a class): each actor loads the encoder once, checks
     its fingerprint against the driver's (a node with other model files must not mix embeddings),
     and encodes batches of `batch_size`; on GPUs where the cluster has them
  -> rows: the input columns + sha256, width, height, embedding (fixed_size_list<float32>[dim],
     null for a failure), error (the reason, null for success).

Ray retries the tasks of a dead worker or node and restarts dead actors, so a job survives losing
a node; what a killed *driver* had not written is the caller's to redo (the shard writer resumes
per partition, see pixquery.ingest.shards).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pixquery.errors import PixqueryError

# Environment variables a job's workers get from the driver (runtime_env): where pixquery's code
# is (a checkout run with PYTHONPATH) and how models are found. Credentials are never forwarded:
# the cluster's nodes have their own.
FORWARDED_ENV = ("PYTHONPATH", "HF_HUB_OFFLINE", "HF_HOME", "PIXQUERY_THREADS")
DECODE_BATCH = 8  # files per decode call: its output (600 KB of pixels a file) stays a small block
DECODE_MEMORY = 256 << 20  # bytes a decode task reserves (a draft JPEG or a big PNG: well below)
DECODE_NICE = 10  # decode tasks run below the encoder's priority, as in the local pipeline
_RAY_MISSING = "the ray engine needs Ray Data, pyarrow and fsspec: pip install 'pixquery[ray]'"


def _ray():
    # No hidden `ray.init()` by a Ray call made after our shutdown (Ray Data's executor thread
    # winding down after Ctrl-C did that, and left a second local Ray's agents running).
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ModuleNotFoundError:
        raise PixqueryError(_RAY_MISSING) from None
    return ray


def local_num_cpus() -> int:
    """Logical CPUs for a Ray started for one run: more than the cores. With exactly as many,
    the encode actors' reservations plus a decode task's can take every CPU and the job waits
    for ever (measured on 2 cores, ../shared/MEASURED.md); the real parallelism is the cores'."""
    return max(4, 2 * (os.cpu_count() or 1))


def _local_object_store_bytes() -> int:
    """A modest object store for a one-run local Ray (the default, 30% of RAM, is a lot on a
    shared machine; Ray Data's streaming keeps well below it)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(max(256 << 20, min(2 << 30, total // 5)))


@contextlib.contextmanager
def connect(address: str | None = None, *, num_cpus: int | None = None):
    """Ray for one run. address None: start a local Ray (num_cpus logical CPUs, default
    local_num_cpus()) and stop it afterwards; "auto" (the cluster this machine is part of, as
    `ray start` made it) or "ray://HOST:PORT" (Ray Client) or "HOST:PORT" (the head's GCS): join
    that cluster and disconnect afterwards, leaving it running. Already connected: use that."""
    with _stdout_to_stderr(), _connect(address, num_cpus) as ray:
        yield ray


@contextlib.contextmanager
def _connect(address: str | None, num_cpus: int | None):
    """connect() without the stdout guard."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    # log_to_driver off: Ray would print its workers' and raylets' log lines (a retried task, a lost
    # node) on this process's stdout, inside `--json` output. Failures still come back as errors.
    kw = dict(
        runtime_env={"env_vars": env} if env else None,
        logging_level=logging.WARNING,
        log_to_driver=False,
        include_dashboard=False,
    )
    try:
        if address is None:
            # A local Ray's workers inherit this process's environment: no runtime_env, whose
            # per-job worker processes cost seconds of start-up.
            kw["runtime_env"] = None
            ray.init(num_cpus=num_cpus or local_num_cpus(), object_store_memory=_local_object_store_bytes(), **kw)
        else:
            if address != "auto" and not address.startswith("ray://") and ":" not in address:
                raise PixqueryError(f"--address takes 'auto', 'ray://HOST:PORT' or 'HOST:PORT', not {address!r}")
            if address.startswith("ray://"):
                kw.pop("include_dashboard")  # a Ray Client connection takes no such option
            ray.init(address=address, **kw)
    except PixqueryError:
        raise
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "start a local Ray" if address is None else f"connect to the Ray cluster at {address}"
        raise PixqueryError(
            f"cannot {where}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from None
    try:
        _quiet_ray_data()
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _stdout_to_stderr():
    """While connected, file descriptor 1 is this process's stderr: Ray's core (C++, writing to
    the descriptor itself) prints what its raylets report (a task retried after a node was lost,
    ...) on stdout, where it would break `--json` output and pipes. Our own output comes after."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):
        yield
        return
    os.dup2(2, 1)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 1)
        os.close(saved)


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or per-run banners: the caller draws its own progress."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for attr in ("print_on_execution_start", "enable_operator_progress_bars"):
        if hasattr(ctx, attr):
            setattr(ctx, attr, False)
    logging.getLogger("ray.data").setLevel(logging.ERROR)


# -- model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What the driver knows of the model, without running it: the workers load it themselves."""

    spec: str  # what load_encoder is given (an absolute path for a local folder)
    precision: str
    name: str
    fingerprint: str
    dim: int
    preprocess_cfg: object  # PreprocessConfig


def describe_model(model: str, precision: str = "fp32") -> ModelInfo:
    from pixquery.encoders.registry import load_encoder

    spec = os.path.abspath(os.path.expanduser(model)) if os.path.isdir(os.path.expanduser(model)) else model
    enc = load_encoder(spec, precision=precision)
    return ModelInfo(spec, precision, enc.name, enc.fingerprint, int(enc.dim), enc.preprocess_cfg)


# -- decode (CPU tasks) -------------------------------------------------------------------


def decode_uri(path: str, cfg, draft: bool = True):
    """The decode stage (workers.decode_photo, the same function the local executor runs) for one
    file or URL: (True, Decoded with normalised (3, H, W) float32 pixels, sha256 hex) or (False,
    reason, None) with the reason the local run gives."""
    from pixquery.ingest.decode import Decoded
    from pixquery.ingest.items import DecodeSettings, MediaItem
    from pixquery.ingest.workers import decode_photo

    piece = decode_photo(MediaItem(path, 0, 0), DecodeSettings(cfg, draft=draft))
    if piece.failure is not None:
        return False, piece.failure, None
    return True, Decoded(pixels=piece.pixels[0], width=piece.width, height=piece.height), piece.sha256


_niced = threading.local()  # per worker thread: nice once


def nice_decode_worker() -> None:
    """Lower a decode task's worker below the encoder's priority, once (os.nice adds up: calling
    it per task would drift to 19). The task worker process only serves this job's decode tasks."""
    if not getattr(_niced, "done", False):
        _niced.done = True
        try:
            os.nice(DECODE_NICE)
        except OSError:
            pass


def load_checked_encoder(spec: str, precision: str, fingerprint: str):
    """An encode actor's model, loaded once and warmed up; a node whose model files differ from
    the driver's (another fingerprint) must not mix its embeddings in, so it stops the job."""
    from pixquery.encoders.registry import load_encoder

    encoder = load_encoder(spec, precision=precision)
    if encoder.fingerprint != fingerprint:
        raise PixqueryError(
            f"model {spec} on this node has fingerprint {encoder.fingerprint}, "
            f"the driver's has {fingerprint}: the nodes must have the same model files"
        )
    warm_up = getattr(encoder, "warm_up", None)
    if warm_up is not None:
        warm_up(("visual",))
    return encoder


def _decode_batch(batch, cfg, draft: bool):
    """A Ray task's work: a pyarrow batch of file rows -> the same rows plus sha256, width, height,
    pixels (float32 bytes) and error. Rows that arrive with an error (the listing's) pass through."""
    import pyarrow as pa

    nice_decode_worker()
    paths = batch.column("path").to_pylist()
    given = batch.column("error").to_pylist() if "error" in batch.column_names else [None] * len(paths)
    sha, width, height, pixels, error = [], [], [], [], []
    for path, err in zip(paths, given):
        ok, payload, digest = (False, err, None) if err else decode_uri(path, cfg, draft)
        if ok:
            sha.append(digest), width.append(payload.width), height.append(payload.height)
            pixels.append(np.ascontiguousarray(payload.pixels, dtype=np.float32).tobytes()), error.append(None)
        else:
            sha.append(None), width.append(None), height.append(None), pixels.append(None), error.append(payload)
    if "error" in batch.column_names:
        batch = batch.drop_columns(["error"])
    for name, values, typ in (
        ("sha256", sha, pa.string()),
        ("width", width, pa.int32()),
        ("height", height, pa.int32()),
        ("pixels", pixels, pa.large_binary()),
        ("error", error, pa.string()),
    ):
        batch = batch.append_column(name, pa.array(values, type=typ))
    return batch


# -- encode (actor pool) ------------------------------------------------------------------


class _Encode:
    """One per actor: the encoder is loaded once, then called batch after batch."""

    def __init__(self, spec: str, precision: str, fingerprint: str, threads: int | None):
        if threads:
            os.environ["PIXQUERY_THREADS"] = str(threads)
        self.encoder = load_checked_encoder(spec, precision, fingerprint)
        self.dim = int(self.encoder.dim)
        self.size = self.encoder.preprocess_cfg.size

    def __call__(self, batch):
        import pyarrow as pa

        errors = batch.column("error").to_pylist()
        ok = [i for i, e in enumerate(errors) if e is None]
        vectors = np.zeros((batch.num_rows, self.dim), np.float32)
        if ok:
            column = batch.column("pixels")
            pixels = np.stack([np.frombuffer(column[i].as_py(), np.float32) for i in ok])
            vectors[ok] = self.encoder.encode_images(pixels.reshape(len(ok), 3, self.size, self.size))
        mask = pa.array([e is not None for e in errors], type=pa.bool_())
        embedding = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1), type=pa.float32()), self.dim, mask=mask
        )
        return batch.drop_columns(["pixels"]).append_column("embedding", embedding)


# -- the flow -----------------------------------------------------------------------------


def as_file_table(files):
    """A pyarrow Table of file rows (path, size, mtime_ns, optional error and extra columns)
    from a Table or from objects with .path, .size and .mtime_ns (scan.FileEntry)."""
    import pyarrow as pa

    if isinstance(files, pa.Table):
        return files
    files = list(files)
    return pa.table(
        {
            "path": pa.array([f.path for f in files], pa.string()),
            "size": pa.array([f.size for f in files], pa.int64()),
            "mtime_ns": pa.array([f.mtime_ns for f in files], pa.int64()),
        }
    )


def default_concurrency(num_gpus: float) -> int:
    """Encode actors: one per GPU, else one per node (each uses its node's cores)."""
    ray = _ray()
    if num_gpus:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // num_gpus))
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


def embed_stream(
    files,
    model: str | ModelInfo,
    precision: str = "fp32",
    *,
    batch_size: int = 32,
    concurrency: int | None = None,
    num_gpus: float | None = None,
    actor_cpus: float = 0.5,
    threads: int | None = None,
    draft: bool = True,
    rows_per_block: int | None = None,
) -> Iterator:
    """Embed `files` (see as_file_table) on the connected Ray cluster; yield pyarrow Tables of
    result rows as they finish, in any order: the input columns, sha256, width, height,
    embedding (fixed_size_list<float32>[dim], null for failures) and error (null for success).

    batch_size: images per encoder call. concurrency: encode actors (default: one per GPU, else
    one per node). num_gpus: GPUs per actor (default 1 where the cluster has GPUs, else 0).
    actor_cpus: logical CPUs an actor reserves; threads: its ONNX Runtime threads (default: the
    node's physical cores, or $PIXQUERY_THREADS)."""
    ray = _ray()
    if batch_size < 1:
        raise PixqueryError("--batch-size must be >= 1")
    info = model if isinstance(model, ModelInfo) else describe_model(model, precision)
    table = as_file_table(files)
    if table.num_rows == 0:
        return
    if num_gpus is None:
        num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    concurrency = concurrency or default_concurrency(num_gpus)
    # Blocks: small enough that every CPU gets decode work early, big enough to keep per-block
    # overhead low on 10^8 files.
    n = rows_per_block or max(4, min(64, table.num_rows // (8 * max(1, concurrency)) or 4))
    blocks = [table.slice(i, n) for i in range(0, table.num_rows, n)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(
        _decode_batch,
        fn_kwargs={"cfg": info.preprocess_cfg, "draft": draft},
        batch_format="pyarrow",
        batch_size=DECODE_BATCH,
        num_cpus=1,
        # A reservation of its own also keeps Ray Data from fusing decoding into the
        # encode actors, where it would run one file at a time beside the encoder
        # instead of on every CPU. Ray retries a task whose worker or node died.
        memory=DECODE_MEMORY,
    )
    ds = ds.map_batches(
        _Encode,
        fn_constructor_kwargs={
            "spec": info.spec,
            "precision": info.precision,
            "fingerprint": info.fingerprint,
            "threads": threads,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        # Ray Data restarts a dead actor; min 1 and half a CPU each let a pool
        # that lost a node go on beside the decode tasks (see ray_run.py)
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=concurrency),
        num_cpus=actor_cpus,
        num_gpus=num_gpus or None,
    )
    batches = iter(ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=1))
    try:
        for batch in batches:
            if batch.num_rows:
                yield batch
    finally:
        # Stop Ray Data's executor now (an early stop, Ctrl-C), before the caller shuts Ray down.
        close = getattr(batches, "close", None)
        if close is not None:
            close()
