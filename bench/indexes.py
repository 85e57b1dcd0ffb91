#!/usr/bin/env python
"""Benchmark every pixquery index kind against exact search and against the study's own configs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/indexes.py --n 20120
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/indexes.py --n 1000000

Data: N synthetic CLIP-like image vectors (bench/synthetic.py: unit norm, clustered, anisotropic,
calibrated on the real CLIP ViT-B/32 text vectors) queried with the 1000 real CLIP ViT-B/32 text
vectors of ../shared/data/clip-vitb32-imagenet-zeroshot (text-to-image search). The first 200
text vectors calibrate `auto`; the other 800 are the evaluation queries. A small table also runs
every kind on the 1000 real vectors themselves (900 indexed, 100 held-out queries).

For each configuration and each value of its search-time knob it measures: build time, time to
add 1% more vectors (for annoy: the rebuild this forces), size on disk, load time (read and
memory-mapped), single-query latency p50/p99 (one thread; the median of 3 rounds' medians: the
machine is shared, see the load averages in the report), batched queries/s (all cores), recall@10
and recall@1000 against exact search. It also measures memory read bandwidth (one thread) for the
bound on exact search, and runs the study's configurations (faiss Flat with faiss's default
threads, faiss HNSW efConstruction 40 / efSearch 16, Annoy 1024 trees) in the same process.

Writes bench/results/indexes-<N>.md, .json and -frontier.png (recall vs queries/s).

`--kinds a,b` keeps only those kinds' rows (the files get a `-a+b` suffix). `--kinds milvus` (issue 13)
instead runs Milvus through pixquery's `milvus` kind against faiss in the same process:

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/indexes.py --kinds milvus --n 100000
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/indexes.py --kinds milvus --n 2000 --quick   # smoke, ~30 s

It first probes which index types the embedded milvus-lite accepts, then builds each accepted one
(inserts of <= 2,000 rows per call), sweeps its search knob, and measures build and reopen time, the
database file's size, the RSS of the milvus-lite server process (a child of this one, found in
/proc) and of this process, recall@10, single-query p50/p99 and the server's CPU per query; beside it
faiss flat (exact), IVF float32 (IVF_FLAT's structure) and HNSW, one thread per query. The report
gives the Milvus/faiss latency ratio at equal recall floors. Writes bench/results/indexes-milvus-<N>.md
and .json.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import faiss  # noqa: E402
import synthetic  # noqa: E402

from pixquery import indexes as ix  # noqa: E402

CORES = os.cpu_count() or 1
T_START = time.time()


def log(*a):
    print(f"[{time.time() - T_START:7.1f}s load {os.getloadavg()[0]:.1f}]", *a, flush=True)


# ---------------------------------------------------------------------------------- the machine


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    versions = {}
    for mod in ("numpy", "faiss", "hnswlib", "annoy", "matplotlib"):
        try:
            from importlib.metadata import version

            versions[mod] = version({"faiss": "faiss-cpu"}.get(mod, mod))
        except Exception:
            versions[mod] = "?"
    caches = {}
    for idx in range(4):
        p = Path(f"/sys/devices/system/cpu/cpu0/cache/index{idx}")
        try:
            caches[f"L{(p / 'level').read_text().strip()}{(p / 'type').read_text().strip()[0]}"] = (
                (p / "size").read_text().strip()
            )
        except OSError:
            pass
    return {
        "cpu": cpu,
        "cores": CORES,
        "caches": caches,
        "ram_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": versions,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "faiss_simd": getattr(faiss, "get_compile_options", lambda: "?")(),
    }


BANDWIDTH_PROBE = r"""
import time, numpy as np, json
a = np.ones(%d, np.float32)
b = np.ones(len(a), np.float32)
best = 0.0
for _ in range(7):
    t = time.perf_counter(); a.dot(b); dt = time.perf_counter() - t
    best = max(best, 2 * a.nbytes / dt)
print(json.dumps(best))
"""


def measure_bandwidth(mib: int = 512) -> dict:
    """Read bandwidth (bytes/s) of a dot product over two large arrays, 1 and all threads."""
    out = {}
    for threads in (1, CORES):
        env = dict(
            os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)
        )
        code = BANDWIDTH_PROBE % (mib * 2**20 // 4)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        out[f"{threads}_thread"] = float(r.stdout.strip())
    return out


# ---------------------------------------------------------------------------------- measuring


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = 0
    for f, t in zip(found[:, :k], truth):
        hits += np.intersect1d(f, t, assume_unique=False).size
    return hits / truth.size


def latency(search, queries: np.ndarray, k: int, budget_s: float = 2.0, max_n: int = 300, rounds: int = 3):
    """(p50 ms, p99 ms, n): single queries; p50 is the lowest of the rounds' medians."""
    for q in queries[:3]:
        search(q[None], k)
    t0 = time.perf_counter()
    search(queries[3:4], k)
    est = max(time.perf_counter() - t0, 1e-5)
    n = int(min(max_n, len(queries), max(10, budget_s / rounds / est)))
    medians, all_t = [], []
    for _ in range(rounds):
        ts = []
        for q in queries[:n]:
            t0 = time.perf_counter()
            search(q[None], k)
            ts.append(time.perf_counter() - t0)
        medians.append(np.median(ts))
        all_t += ts
    return float(min(medians) * 1e3), float(np.percentile(all_t, 99) * 1e3), n


def batch_qps(search, queries: np.ndarray, k: int) -> float:
    best = 0.0
    for _ in range(1):
        t0 = time.perf_counter()
        search(queries, k)
        best = max(best, len(queries) / (time.perf_counter() - t0))
    return best


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------------------------- the study's configs


class StudyFlat:
    """faiss IndexFlatIP as the study ran it: faiss's default thread count for every query."""

    kind = "study-flat"

    def __init__(self, vectors):
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(vectors)

    def search(self, q, k):
        faiss.omp_set_num_threads(CORES)  # faiss's default
        return self.index.search(q, k)

    def save(self, path):
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path / "index.faiss"))

    @staticmethod
    def load(path):
        return faiss.read_index(str(path / "index.faiss"))


class StudyHNSW(StudyFlat):
    """faiss IndexHNSWFlat with faiss's defaults, as the study: efConstruction 40, efSearch 16 (M 32)."""

    kind = "study-hnsw"

    def __init__(self, vectors):
        faiss.omp_set_num_threads(CORES)
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = 40
        self.index.hnsw.efSearch = 16
        self.index.add(vectors)


class FaissHNSW(StudyFlat):
    """faiss IndexHNSWFlat tuned like our hnsw kind (one thread per query, beam >= 1.5 k): the
    measurement behind choosing hnswlib (docs/indexes.md)."""

    kind = "faiss-hnsw"

    def __init__(self, vectors, M=32, ef_construction=200):
        import types

        faiss.omp_set_num_threads(CORES)
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(vectors)
        self.config = types.SimpleNamespace(ef_search=64)

    def search(self, q, k):
        p = faiss.SearchParametersHNSW()
        p.efSearch = max(self.config.ef_search, int(1.5 * k))
        faiss.omp_set_num_threads(1 if len(q) < 16 else CORES)
        return self.index.search(q, k, params=p)


class StudyAnnoy:
    """Annoy with 1024 trees and annoy's default search_k, as the study."""

    kind = "study-annoy"

    def __init__(self, vectors, n_trees=1024):
        from annoy import AnnoyIndex

        self.index = AnnoyIndex(vectors.shape[1], "angular")
        for i, v in enumerate(vectors):
            self.index.add_item(i, v)
        self.index.build(n_trees, n_jobs=-1)

    def search(self, q, k):
        out = np.full((len(q), k), -1, np.int64)
        for r, v in enumerate(q):
            items = self.index.get_nns_by_vector(v, k)
            out[r, : len(items)] = items
        return None, out

    def save(self, path):
        path.mkdir(parents=True, exist_ok=True)
        self.index.save(str(path / "index.ann"))

    def load(self, path):
        from annoy import AnnoyIndex

        a = AnnoyIndex(self.index.f, "angular")
        a.load(str(path / "index.ann"))
        return a


# ---------------------------------------------------------------------------------- one configuration


class Bench:
    def __init__(
        self,
        n: int,
        eval_q: np.ndarray,
        truth10: np.ndarray,
        truth1000: np.ndarray,
        q1000: np.ndarray,
        extra: np.ndarray,
        workdir: Path,
        quick: bool,
        kinds: set[str] | None = None,
    ):
        self.n = n
        self.eval_q = eval_q
        self.truth10 = truth10
        self.truth1000 = truth1000
        self.q1000 = q1000
        self.extra = extra  # vectors for the "add 1%" measurement
        self.workdir = workdir
        self.rows: list[dict] = []
        self.quick = quick
        self.kinds = kinds  # None: every configuration; else only families whose first word is listed

    def run(
        self,
        name: str,
        family: str,
        build,
        knob: str | None = None,
        values=(None,),
        *,
        big_k: bool = True,
        add: bool = True,
        note: str = "",
        target=None,
    ):
        """Build with build() -> index, then measure it for each knob value."""
        if self.kinds is not None and family.split()[0] not in self.kinds:
            return
        log(f"{name}: building")
        gc.collect()
        t0 = time.perf_counter()
        index = build()
        build_s = time.perf_counter() - t0
        info = {"name": name, "family": family, "build_s": build_s, "note": note}
        path = self.workdir / name.replace(" ", "_").replace("/", "_")
        t0 = time.perf_counter()
        index.save(path)
        info["save_s"] = time.perf_counter() - t0
        info["size_bytes"] = ix.index_size(path) if (path / "manifest.json").exists() else _du(path)
        info["kind"] = getattr(index, "kind", family)
        info["params"] = index.params() if hasattr(index, "params") else {}
        # load: read into RAM, and memory-mapped (+ first query, which touches the pages it needs)
        loader = (
            (lambda mmap: ix.load_index(info["kind"], path, mmap=mmap))
            if hasattr(index, "params")
            else (lambda mmap, index=index: index.load(path))
        )  # bound: `index` is deleted below
        gc.collect()
        r0 = rss_mb()
        t0 = time.perf_counter()
        loaded = loader(False)
        info["load_s"] = time.perf_counter() - t0
        info["rss_load_mb"] = rss_mb() - r0
        del loaded
        gc.collect()
        t0 = time.perf_counter()
        mapped = loader(True)
        if hasattr(mapped, "search") and hasattr(index, "params"):
            mapped.search(self.eval_q[:1], 10)
        info["load_mmap_s"] = time.perf_counter() - t0
        # add 1% more vectors to the loaded copy (annoy: this forces a rebuild of the forest)
        if add and hasattr(mapped, "add"):
            base = 10**9
            t0 = time.perf_counter()
            mapped.add(np.arange(base, base + len(self.extra)), self.extra)
            mapped.search(self.eval_q[:1], 10)
            info["add_s"] = time.perf_counter() - t0
            info["add_n"] = len(self.extra)
        del mapped
        gc.collect()
        holder = target(index) if target else index
        for v in values:
            if knob is not None:
                setattr(holder.config, knob, v)
            row = dict(info)
            row["knob"] = knob
            row["value"] = v
            row["label"] = name if knob is None else f"{name} {knob}={v}"
            self._measure(index, row, big_k)
            self.rows.append(row)
            log(
                f"{row['label']}: R@10 {row['recall10']:.4f} p50 {row['p50_ms']:.3f} ms"
                + (f" | R@1000 {row['recall1000']:.4f} p50 {row['p50_ms_1000']:.2f} ms" if big_k else "")
            )
        shutil_rmtree(path)
        del index, holder
        gc.collect()

    def _measure(self, index, row, big_k):
        search = index.search
        t0 = time.perf_counter()
        _, found = search(self.eval_q, 10)  # batched: all queries in one call, all cores
        t = time.perf_counter() - t0
        row["recall10"] = recall_at(found, self.truth10)
        row["qps_batch"] = max(len(self.eval_q) / t, batch_qps(search, self.eval_q, 10) if t < 2 else 0)
        row["p50_ms"], row["p99_ms"], row["lat_n"] = latency(search, self.eval_q, 10)
        if big_k:
            _, found = search(self.q1000, 1000)
            row["recall1000"] = recall_at(found, self.truth1000)
            row["p50_ms_1000"], row["p99_ms_1000"], _ = latency(search, self.q1000, 1000, budget_s=1.5, max_n=100)
        row["load_avg"] = round(os.getloadavg()[0], 2)


def shutil_rmtree(p: Path):
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


# ---------------------------------------------------------------------------------- real CLIP vectors


def real_vectors_table() -> list[dict]:
    """Every kind on the 1000 real CLIP ViT-B/32 text vectors: 900 indexed, 100 queries."""
    t = synthetic.real_text_vectors()
    if t is None:
        return []
    rng = np.random.default_rng(0)
    order = rng.permutation(len(t))
    base, q = t[order[:900]], t[order[900:]]
    ids = order[:900].astype(np.int64)
    truth = ids[np.argsort(-(q @ base.T), axis=1)[:, :10]]
    out = []
    configs = [
        ("flat", {}),
        ("flat", {"storage": "float16"}),
        ("flat", {"storage": "int8"}),
        ("flat", {"storage": "pq4"}),
        ("hnsw", {}),
        ("annoy", {}),
        ("annoy", {"n_trees": 100, "search_k": 10000}),
        ("ivf", {}),
        ("ivf", {"nprobe": 8}),
        ("sharded", {"shard_size": 100}),
        ("auto", {}),
    ]
    flat = ix.build_index("flat", 512, ids, base)
    _, fi = flat.search(q, 10)
    for kind, params in configs:
        index = ix.build_index(kind, 512, ids, base, **params)
        _, found = index.search(q, 10)
        out.append(
            {
                "kind": kind,
                "params": params,
                "recall10": recall_at(found, truth),
                "identical_to_flat": bool((found == fi).all()),
                "effective": {k: v for k, v in index.params().items() if k != "chosen"},
            }
        )
    return out


# ---------------------------------------------------------------------------------- the runs


def configs_20k(b: Bench, x: np.ndarray, ids: np.ndarray, calib: np.ndarray):
    dim = x.shape[1]
    B = lambda kind, **p: lambda: ix.build_index(kind, dim, ids, x, **p)  # noqa: E731
    # the study, as configured
    b.run("study Flat (faiss default threads)", "study", lambda: StudyFlat(x), add=False)
    b.run("study HNSW efC40 efS16", "study", lambda: StudyHNSW(x), add=False)
    b.run("study Annoy 1024 trees", "study", lambda: StudyAnnoy(x), add=False)
    # the default
    b.run("auto (no queries given)", "auto", B("auto"))
    b.run("auto (200 text queries)", "auto", lambda: ix.build_index("auto", dim, ids, x, queries=calib))
    # flat
    b.run("flat float32", "flat", B("flat"))
    b.run("flat float16", "flat", B("flat", storage="float16"))
    b.run("flat int8", "flat", B("flat", storage="int8"))
    b.run("flat pq4+rerank", "flat pq4", B("flat", storage="pq4"), "rerank_min", [25, 50, 100, 200, 400, 800])
    # hnsw
    efs = [16, 32, 64, 128, 256, 512, 1024]
    b.run("hnsw M16 efC100", "hnsw M16", B("hnsw", M=16, ef_construction=100), "ef_search", efs)
    b.run("hnsw M32 efC200", "hnsw M32", B("hnsw", M=32, ef_construction=200), "ef_search", efs)
    b.run("hnsw M48 efC400", "hnsw M48", B("hnsw", M=48, ef_construction=400), "ef_search", efs[2:])
    b.run("faiss HNSW M32 efC200 (comparison)", "faiss HNSW M32", lambda: FaissHNSW(x), "ef_search", efs, add=False)
    # annoy
    b.run("annoy 100 trees", "annoy 100", B("annoy", n_trees=100), "search_k", [-1, 10_000, 50_000, 200_000])
    # ivf
    npr = [4, 8, 16, 32, 64, 128, 256]
    b.run("ivf float16", "ivf float16", B("ivf"), "nprobe", npr)
    b.run("ivf int8", "ivf int8", B("ivf", storage="int8"), "nprobe", npr[2:])
    b.run("ivf pq64+rerank", "ivf pq", B("ivf", storage="pq", rerank=4), "nprobe", npr[2:])
    # sharded: the study's index-size sweep (exact flat shards)
    for size in (16, 64, 256, 1024, 4096, 20120):
        b.run(f"sharded {size}/shard", "sharded", B("sharded", shard_size=size), big_k=size >= 256, add=size >= 256)


def configs_1m(
    b: Bench, x: np.ndarray, ids: np.ndarray, calib: np.ndarray, with_auto: bool, with_hnsw: bool, nlist: int
):
    """~20 min on 2 cores. The study's Annoy (1024 trees) is left out: ~14 GB and hours to build at 1M;
    flat float16 and int8 are measured at 20k only."""
    dim = x.shape[1]
    B = lambda kind, **p: lambda: ix.build_index(kind, dim, ids, x, **p)  # noqa: E731
    b.run("study Flat (faiss default threads)", "study", lambda: StudyFlat(x), add=False)
    b.run("flat float32", "flat", B("flat"))
    name = f"ivf{nlist or ''} float16"
    b.run(name, "ivf float16", B("ivf", nlist=nlist), "nprobe", [16, 32, 64, 96, 128, 192, 256, 384])
    if with_hnsw:  # ~6 min more; HNSW finds few of the true neighbours of text queries at 1M
        b.run("hnsw M16 efC100", "hnsw M16", B("hnsw", M=16, ef_construction=100), "ef_search", [256, 1024])
    b.run("study HNSW efC40 efS16", "study", lambda: StudyHNSW(x), add=False)
    b.run("annoy 16 trees", "annoy 16", B("annoy", n_trees=16), "search_k", [-1, 20_000, 100_000], add=False)
    if with_auto:
        b.run("auto (200 text queries)", "auto", lambda: ix.build_index("auto", dim, ids, x, queries=calib))


# ---------------------------------------------------------------------------------- milvus vs faiss (issue 13)

MILVUS_TYPES = ("FLAT", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN", "AUTOINDEX")


def _proc_children(pid: int) -> list[int]:
    """Every descendant of `pid` (read from /proc: no psutil needed)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _proc_kb(pid: int, key: str) -> int:
    """VmRSS / VmHWM (peak RSS) of a process, kB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def milvus_server_pid(db_file: Path) -> int | None:
    """The milvus-lite server process serving `db_file`: a child of this process whose command
    line names the file (milvus-lite runs its engine as a separate process)."""
    for pid in _proc_children(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"/milvus") and str(db_file).encode() in cmd:
            return pid
    return None


def probe_milvus_types(dim: int = 64, uri: str = "") -> dict:
    """Which index types the embedded milvus-lite (or the server at `uri`) accepts: a 2,000-row
    collection per type (`ok`, the index it reports, recall@10 of 20 of its own vectors) or the
    engine's refusal. On a server the rows stay in a growing segment: this tests acceptance only."""
    from pymilvus import DataType, MilvusClient

    tmp = Path(tempfile.mkdtemp(prefix="pixquery-mprobe-"))
    client = MilvusClient(uri=uri or str(tmp / "probe.db"))
    suffix = f"_{os.getpid()}_{int(time.time())}" if uri else ""
    rng = np.random.default_rng(1)
    v = rng.standard_normal((2000, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    truth = np.argsort(-(v[:20] @ v.T), axis=1)[:, :10]
    from pixquery.indexes import milvus as mv

    out = {}
    import logging

    logging.disable(logging.ERROR)  # pymilvus logs every refused create_index as an ERROR
    try:
        for t in MILVUS_TYPES:
            name = f"probe_{t.lower()}{suffix}"
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            ip = client.prepare_index_params()
            cfg = mv.Config(uri=uri, index_type=t, nlist=16, M=16)
            ip.add_index(
                field_name="vector",
                index_type=t,
                metric_type="IP",
                params=mv.Index._build_params(types.SimpleNamespace(config=cfg, dim=dim)),
            )
            try:
                client.create_collection(name, schema=schema, index_params=ip)
                client.insert(name, [{"id": i, "vector": row} for i, row in enumerate(v.tolist())])
                res = client.search(
                    name,
                    data=v[:20].tolist(),
                    limit=10,
                    search_params=mv.Index._search_params(types.SimpleNamespace(config=cfg), 10),
                )
                found = np.array([[h["id"] for h in hits] for hits in res])
                desc = client.describe_index(name, "vector")
                out[t] = {
                    "ok": True,
                    "reported": {k: desc.get(k) for k in ("index_type", "nlist", "M", "efConstruction") if k in desc},
                    "recall10": recall_at(found, truth),
                }
            except Exception as e:  # noqa: BLE001  (the engine's refusal is the result)
                msg = str(getattr(e, "message", "") or e)
                out[t] = {"ok": False, "error": msg[:200]}
            try:
                client.drop_collection(name)
            except Exception:  # noqa: BLE001
                pass
    finally:
        logging.disable(logging.NOTSET)
        client.close()
        from pixquery.indexes.milvus import _release_lite

        if not uri:
            _release_lite(tmp / "probe.db")
        shutil_rmtree(tmp)
    return out


def _lat_with_cpu(search, queries, k, pid, budget_s):
    """latency() plus the server's CPU time per query (milvus-lite: its own process)."""
    c0 = _proc_cpu_s(pid) if pid else 0.0
    p50, p99, n = latency(search, queries, k, budget_s=budget_s)
    cpu_ms = (_proc_cpu_s(pid) - c0) / (3 * n + 4) * 1e3 if pid else None
    return p50, p99, n, cpu_ms


class MilvusBench:
    """Milvus (embedded milvus-lite, the real engine in its own process) against pixquery's faiss
    kinds, in one process, on the same vectors and queries."""

    def __init__(self, x, ids, eval_q, truth10, workdir: Path, quick: bool):
        self.x, self.ids, self.q, self.truth = x, ids, eval_q, truth10
        self.workdir = workdir
        self.quick = quick
        self.budget = 0.5 if quick else 2.0
        self.rows: list[dict] = []

    def _measure(self, index, row, pid=None):
        t0 = time.perf_counter()
        _, found = index.search(self.q, 10)
        row["qps_batch"] = len(self.q) / (time.perf_counter() - t0)
        row["recall10"] = recall_at(found, self.truth)
        row["p50_ms"], row["p99_ms"], row["lat_n"], row["server_cpu_ms_per_query"] = _lat_with_cpu(
            index.search, self.q, 10, pid, self.budget
        )
        row["load_avg"] = round(os.getloadavg()[0], 2)

    def milvus(self, index_type: str, knob: str | None = None, values=(None,), **params):
        from pixquery.indexes import milvus as mv

        name = f"milvus-lite {index_type}" + "".join(f" {k}={v}" for k, v in params.items())
        log(f"{name}: inserting {len(self.x):,} rows in batches of {mv.MAX_BATCH}")
        gc.collect()
        rss0 = rss_mb()
        t0 = time.perf_counter()
        index = mv.Index(self.x.shape[1], mv.Config(index_type=index_type, **params))
        index.add(self.ids, self.x)
        insert_s = time.perf_counter() - t0
        index._client.flush(index.config.collection)
        index.search(self.q[:1], 10)  # ready to serve
        build_s = time.perf_counter() - t0
        pid = milvus_server_pid(index._db)
        info = {
            "name": name,
            "engine": "milvus-lite",
            "index": index_type,
            "build_s": build_s,
            "insert_s": insert_s,
            "params": index.params(),
            "server_pid": pid,
            "size_bytes": _du(index._db.parent),  # the milvus-lite database file (SQLite) and its journal
            "server_rss_mb": _proc_kb(pid, "VmRSS") / 1024 if pid else None,
            "client_rss_delta_mb": rss_mb() - rss0,
        }
        # reopening: milvus-lite rebuilds the collection from its file when it loads it
        c = index._client
        c.release_collection(index.config.collection)
        t0 = time.perf_counter()
        c.load_collection(index.config.collection)
        index.search(self.q[:1], 10)
        info["reload_s"] = time.perf_counter() - t0
        for v in values:
            if knob:
                setattr(index.config, knob, v)
            row = dict(info, knob=knob, value=v, label=name if knob is None else f"{name} {knob}={v}")
            self._measure(index, row, pid)
            row["server_rss_mb"] = _proc_kb(pid, "VmRSS") / 1024 if pid else None
            row["server_peak_mb"] = _proc_kb(pid, "VmHWM") / 1024 if pid else None
            self.rows.append(row)
            log(
                f"{row['label']}: R@10 {row['recall10']:.4f} p50 {row['p50_ms']:.3f} ms p99 {row['p99_ms']:.3f} "
                f"server {row['server_rss_mb']:.0f} MB (peak {row['server_peak_mb']:.0f})"
            )
        index.close()
        del index
        gc.collect()

    def inprocess(self, name: str, kind: str, knob: str | None, values, **params):
        log(f"{name}: building")
        gc.collect()
        rss0 = rss_mb()
        t0 = time.perf_counter()
        index = ix.build_index(kind, self.x.shape[1], self.ids, self.x, **params)
        build_s = time.perf_counter() - t0
        gc.collect()
        rss_delta = rss_mb() - rss0
        path = self.workdir / name.replace(" ", "_")
        index.save(path)
        size = ix.index_size(path)
        shutil_rmtree(path)
        info = {
            "name": name,
            "engine": "faiss" if kind in ("flat", "ivf") or params.get("backend") == "faiss" else kind,
            "index": kind,
            "build_s": build_s,
            "params": index.params(),
            "size_bytes": size,
            "client_rss_delta_mb": rss_delta,
        }
        for v in values:
            if knob:
                setattr(index.config, knob, v)
            row = dict(info, knob=knob, value=v, label=name if knob is None else f"{name} {knob}={v}")
            self._measure(index, row)
            self.rows.append(row)
            log(f"{row['label']}: R@10 {row['recall10']:.4f} p50 {row['p50_ms']:.3f} ms p99 {row['p99_ms']:.3f}")
        del index
        gc.collect()

    def rpc_floor(self) -> dict:
        """p50 of one search on a 1,000-row FLAT collection: pymilvus + gRPC + milvus-lite's fixed cost."""
        from pixquery.indexes import milvus as mv

        index = mv.Index(self.x.shape[1], mv.Config(index_type="FLAT"))
        index.add(self.ids[:1000], self.x[:1000])
        index.search(self.q[:1], 10)
        p50, p99, n = latency(index.search, self.q, 10, budget_s=self.budget)
        index.close()
        return {"rows": 1000, "p50_ms": p50, "p99_ms": p99, "n": n}


def interim_threshold(mb: MilvusBench, sizes=(99_999, 100_000)) -> list[dict]:
    """milvus-lite IVF_FLAT on the first m vectors, for m on each side of 100,000 rows: below it the
    engine scans every row (recall 1.0, latency growing with m), from it on it answers from an
    index of its own whose parameters nlist / nprobe do not reach (see the report's notes)."""
    from pixquery.indexes import milvus as mv

    out = []
    for m in sizes:
        if m > len(mb.x):
            continue
        gt = faiss.IndexFlatIP(mb.x.shape[1])
        gt.add(mb.x[:m])
        _, truth = gt.search(mb.q, 10)
        del gt
        index = mv.Index(mb.x.shape[1], mv.Config(index_type="IVF_FLAT", nlist=1024))
        index.add(mb.ids[:m], mb.x[:m])
        row = {"rows": m}
        for npr in (8, 512):
            index.config.nprobe = npr
            _, found = index.search(mb.q, 10)
            p50, _, _ = latency(index.search, mb.q, 10, budget_s=1.0)
            row[f"nprobe{npr}"] = {"recall10": recall_at(found, truth), "p50_ms": p50}
        index.close()
        out.append(row)
        log(f"milvus-lite IVF_FLAT nlist=1024 on {m:,} rows: {row}")
    return out


def milvus_configs(mb: MilvusBench, n: int, accepted: set[str], faiss_nlist: int):
    from pixquery.indexes.ivf import auto_nlist

    nlist = faiss_nlist or auto_nlist(n)
    quick = mb.quick
    # Milvus: each index type the embedded engine accepts; IVF_FLAT with its search knob swept
    if "FLAT" in accepted:
        mb.milvus("FLAT")
    if "IVF_FLAT" in accepted:
        mb.milvus("IVF_FLAT", "nprobe", [16] if quick else [8, 32, 128, 512], nlist=nlist)
    if "AUTOINDEX" in accepted:
        mb.milvus("AUTOINDEX")
    for t in ("IVF_SQ8", "IVF_PQ", "HNSW", "DISKANN"):  # a server's types, if this engine ever takes them
        if t in accepted:
            knob, vals = (
                ("ef", [64, 256])
                if t == "HNSW"
                else ("search_list", [100])
                if t == "DISKANN"
                else ("nprobe", [32, 128])
            )
            mb.milvus(t, knob, vals[:1] if quick else vals, **({"nlist": nlist} if t.startswith("IVF") else {}))
    # faiss, in this process, one thread per query: exact, IVF (same structure as IVF_FLAT), HNSW
    mb.inprocess("faiss flat float32 (exact)", "flat", None, [None])
    npr = [16] if quick else ([8, 16, 32, 64, 128, 256] if n < 500_000 else [32, 64, 128, 256, 384])
    mb.inprocess(f"faiss ivf{nlist} float32", "ivf", "nprobe", npr, nlist=nlist, storage="float32")
    efs = [64] if quick else [64, 128, 256, 512, 1024]
    mb.inprocess("faiss hnsw M16 efC100", "hnsw", "ef_search", efs, M=16, ef_construction=100, backend="faiss")


def milvus_summary(rows: list[dict], n: int) -> dict:
    """Fastest p50 per side at each recall floor, and their ratio (the issue's target at 1M)."""
    mil = [r for r in rows if r["engine"].startswith("milvus")]
    fai = [r for r in rows if not r["engine"].startswith("milvus")]
    ivf = [r for r in fai if r["index"] == "ivf"]
    out = {"at_recall": []}
    for floor in (0.9, 0.95, 0.99, 1.0):
        m = min((r for r in mil if r["recall10"] >= floor), key=lambda r: r["p50_ms"], default=None)
        f = min((r for r in fai if r["recall10"] >= floor), key=lambda r: r["p50_ms"], default=None)
        fi = min((r for r in ivf if r["recall10"] >= floor), key=lambda r: r["p50_ms"], default=None)
        out["at_recall"].append(
            {
                "floor": floor,
                "milvus": m and m["label"],
                "milvus_p50": m and m["p50_ms"],
                "milvus_recall": m and m["recall10"],
                "faiss": f and f["label"],
                "faiss_p50": f and f["p50_ms"],
                "faiss_recall": f and f["recall10"],
                "ratio": (m["p50_ms"] / f["p50_ms"]) if m and f else None,
                "faiss_ivf": fi and fi["label"],
                "ratio_vs_ivf": (m["p50_ms"] / fi["p50_ms"]) if m and fi else None,
            }
        )
    at95 = next(a for a in out["at_recall"] if a["floor"] == 0.95)
    out["target"] = {
        "target": f"N={n:,}: a Milvus index with recall@10 >= 0.95 within 3x faiss's p50 at recall >= 0.95",
        "met": at95["ratio"] is not None and at95["ratio"] <= 3.0,
        "measured": (
            f"{at95['milvus']}: p50 {at95['milvus_p50']:.2f} ms vs {at95['faiss']}: {at95['faiss_p50']:.3f} ms "
            f"-> {at95['ratio']:.1f}x"
            if at95["ratio"] is not None
            else f"no Milvus configuration reached recall@10 0.95 (best: "
            f"{max(mil, key=lambda r: r['recall10'])['label'] if mil else '-'})"
        ),
    }
    # does the search knob change anything? (milvus-lite answers from its own interim index)
    knob = {}
    for r in mil:
        if r["knob"]:
            knob.setdefault(r["name"], set()).add(round(r["recall10"], 4))
    out["knob_effect"] = {k: sorted(v) for k, v in knob.items()}
    return out


def fmt_milvus_table(rows: list[dict]) -> list[str]:
    lines = [
        "| configuration | build s | reopen s | on disk MB | memory MB | p50 ms | p99 ms | server CPU ms/query | batch q/s | R@10 | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["engine"] == "milvus-lite":
            mem = f"server {r['server_rss_mb']:.0f} (peak {r['server_peak_mb']:.0f}) + client {r['client_rss_delta_mb']:.0f}"
            reopen = f"{r['reload_s']:.1f}"
            cpu = f"{r['server_cpu_ms_per_query']:.2f}" if r.get("server_cpu_ms_per_query") is not None else "-"
        else:
            mem, reopen, cpu = f"{r['client_rss_delta_mb']:.0f}", "-", "(in process)"
        lines.append(
            f"| {r['label']} | {r['build_s']:.1f} | {reopen} | {r['size_bytes'] / 2**20:.0f} | {mem} | "
            f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {cpu} | {r['qps_batch']:.0f} | {r['recall10']:.4f} | {r['load_avg']} |"
        )
    return lines


def write_milvus_report(out: Path, res: dict):
    n, m, s = res["n"], res["machine"], res["summary"]
    L = [
        f"# Milvus (embedded milvus-lite) against faiss, N = {n:,}",
        "",
        f"Run {m['date']} by `{res['command']}` ({res['wall_s'] / 60:.1f} min).",
        "",
        "## Machine",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, Python {m['python']}; "
        f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}. Shared with other jobs: load average "
        f"{m['load_avg_start']} at the start, {res['load_avg_end']} at the end (1-minute load per row in the table).",
        "",
        "## Data",
        "",
        f"{n:,} synthetic CLIP-like image vectors (512-d, bench/synthetic.py, seed 0) queried with the {res['n_eval']} "
        "real CLIP ViT-B/32 text vectors of bench/indexes.py; recall@10 against exact inner-product search.",
        "",
        "## Index types the embedded engine accepts",
        "",
        "Probed at run time (a 2,000-row collection per type, metric IP):",
        "",
        "| index type | accepted | what milvus-lite says |",
        "|---|---|---|",
    ]
    for t, p in res["probe"].items():
        said = json.dumps(p["reported"]) if p["ok"] else p["error"]
        L.append(f"| {t} | {'yes' if p['ok'] else 'no'} | {said} |")
    L += [
        "",
        "## Target",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| {s['target']['target']} | {s['target']['measured']} | {'yes' if s['target']['met'] else '**no**'} |",
        "",
        "## Latency ratio Milvus / faiss at equal recall",
        "",
        "Fastest p50 on each side among the configurations below that reach the recall floor.",
        "",
        "| recall@10 floor | Milvus (p50 ms) | faiss (p50 ms) | ratio milvus/faiss | ratio vs faiss IVF |",
        "|---|---|---|---|---|",
    ]
    for a in s["at_recall"]:
        mcell = f"{a['milvus']} ({a['milvus_p50']:.2f})" if a["milvus"] else "none reaches it"
        fcell = f"{a['faiss']} ({a['faiss_p50']:.3f})" if a["faiss"] else "none reaches it"
        ratio = f"{a['ratio']:.1f}x" if a["ratio"] else "-"
        rivf = f"{a['ratio_vs_ivf']:.1f}x" if a["ratio_vs_ivf"] else "-"
        L.append(f"| {a['floor']} | {mcell} | {fcell} | {ratio} | {rivf} |")
    rf = res.get("rpc_floor")
    L += [
        "",
        "## All configurations",
        "",
        "build s: from an empty collection to the first answered query (Milvus: inserts of <= 2,000 rows per call "
        "through pixquery's `milvus` kind, flush, first search). reopen s: release and load the collection again "
        "(milvus-lite rebuilds it from its file). on disk: Milvus's database file; faiss: the saved index. memory: "
        "Milvus: RSS of the milvus-lite server process (its peak so far) + growth of this process; faiss: growth of "
        "this process after the build. p50/p99: single queries (faiss: one thread; Milvus: whatever its server uses, "
        "see its CPU ms per query), p50 the lowest of three rounds' medians. batch q/s: all queries in one call.",
        "",
    ]
    L += fmt_milvus_table(res["rows"])
    if rf:
        L += [
            "",
            f"Fixed cost of a Milvus query here (pymilvus + gRPC over a Unix socket + milvus-lite, FLAT over "
            f"{rf['rows']:,} rows): p50 {rf['p50_ms']:.2f} ms, p99 {rf['p99_ms']:.2f} ms.",
        ]
    if res.get("interim_threshold"):
        L += [
            "",
            "milvus-lite IVF_FLAT (nlist 1024) on the first rows of the same vectors, each side of 100,000 rows:",
            "",
            "| rows | recall@10, nprobe 8 | p50 ms | recall@10, nprobe 512 | p50 ms |",
            "|---|---|---|---|---|",
        ]
        for t in res["interim_threshold"]:
            a, b = t["nprobe8"], t["nprobe512"]
            L.append(
                f"| {t['rows']:,} | {a['recall10']:.4f} | {a['p50_ms']:.2f} | {b['recall10']:.4f} | {b['p50_ms']:.2f} |"
            )
    if s["knob_effect"]:
        L += [
            "",
            "Recall@10 across the swept search knob, per Milvus build: "
            + "; ".join(f"{k}: {v}" for k, v in s["knob_effect"].items())
            + ".",
        ]
    if res.get("notes"):
        L += ["", "## Notes", ""] + [f"* {x}" for x in res["notes"]]
    L.append("")
    out.write_text("\n".join(L))


def run_milvus(args, res: dict, x, ids, eval_q, truth10, n: int):
    from importlib.metadata import version

    for p in ("pymilvus", "milvus-lite"):
        try:
            res["machine"]["versions"][p] = version(p)
        except Exception:  # noqa: BLE001
            res["machine"]["versions"][p] = "?"
    log("milvus: probing the index types of the embedded engine")
    res["probe"] = probe_milvus_types()
    accepted = {t for t, p in res["probe"].items() if p["ok"]}
    log("milvus accepts:", sorted(accepted))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pixquery-mbench-"))
    mb = MilvusBench(x, ids, eval_q, truth10, work, args.quick)
    res["rpc_floor"] = mb.rpc_floor()
    log("milvus fixed cost per query:", res["rpc_floor"])
    milvus_configs(mb, n, accepted, args.faiss_nlist)
    if not args.quick and n >= 100_000 and "IVF_FLAT" in accepted:
        res["interim_threshold"] = interim_threshold(mb)
    res["rows"] = mb.rows
    res["summary"] = milvus_summary(mb.rows, n)
    res["notes"] = list(args.note or [])
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["wall_s"] = time.time() - T_START
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"indexes-milvus-{n}"
    Path(f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    write_milvus_report(Path(f"{stem}.md"), res)
    t = res["summary"]["target"]
    log(("MET    " if t["met"] else "NOT MET"), t["target"], "--", t["measured"])
    for a in res["summary"]["at_recall"]:
        log(
            f"recall >= {a['floor']}: milvus {a['milvus']} {a['milvus_p50']} ms | faiss {a['faiss']} {a['faiss_p50']} ms | ratio {a['ratio']}"
        )
    log(f"wrote {stem}.md, .json")
    if args.workdir is None:
        shutil_rmtree(work)


# ---------------------------------------------------------------------------------- a Milvus server vs faiss

# index type -> (the search knob, its values below 500,000 rows, from 500,000 rows)
SERVER_SWEEPS = {
    "FLAT": (None, [None], [None]),
    "IVF_FLAT": ("nprobe", [8, 16, 32, 64, 128, 256], [16, 32, 64, 128, 256, 512]),
    "IVF_SQ8": ("nprobe", [8, 16, 32, 64, 128, 256], [16, 32, 64, 128, 256, 512]),
    "IVF_PQ": ("nprobe", [8, 16, 32, 64, 128, 256], [16, 32, 64, 128, 256, 512]),
    "HNSW": ("ef", [16, 32, 64, 128, 256, 512], [64, 128, 256, 512, 1024, 2048]),
    "DISKANN": ("search_list", [16, 32, 64, 128, 256], [32, 64, 128, 256, 512]),
    "AUTOINDEX": (None, [None], [None]),
}


def wait_load(max_load: float, wait_s: float) -> float:
    """Wait up to wait_s seconds for the 1-minute load average to fall to max_load (the machine is
    shared); return the load when measuring starts."""
    t0 = time.time()
    while os.getloadavg()[0] > max_load and time.time() - t0 < wait_s:
        time.sleep(5)
    return round(os.getloadavg()[0], 2)


class ServerBench(MilvusBench):
    """A Milvus standalone server (started here with --milvus-server, or at --milvus-uri) against
    faiss in this process. The vectors are inserted once through pixquery's `milvus` kind, flushed
    and compacted; each index type is then built on that collection (release, drop the index,
    create the new one, wait until every row is indexed), the server restarted (when started here:
    its RSS is then that index's alone) and the collection loaded before measuring."""

    def __init__(
        self,
        x,
        ids,
        eval_q,
        truth10,
        workdir: Path,
        quick: bool,
        uri: str,
        srv,
        pid,
        nlist: int,
        hnsw_M: int,
        hnsw_efc: int,
        max_load: float,
        quiet_wait: float,
        save=lambda: None,
    ):
        super().__init__(x, ids, eval_q, truth10, workdir, quick)
        self.uri, self.srv, self._pid0 = uri, srv, pid
        self.nlist, self.hnsw_M, self.hnsw_efc = nlist, hnsw_M, hnsw_efc
        self.max_load, self.quiet_wait = max_load, quiet_wait
        self.save = save
        self.coll = f"pixquery_bench_{len(x)}_{os.getpid()}"
        self.data: dict = {}
        self.engine = "milvus"

    @property
    def pid(self):
        return self.srv.pid if self.srv else self._pid0

    def admin(self):
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri, timeout=600)

    def _measure(self, index, row, pid=None):
        row["load_before"] = wait_load(self.max_load, self.quiet_wait)
        super()._measure(index, row, pid)

    def _config(self, index_type: str, **kw):
        from pixquery.indexes import milvus as mv

        return mv.Config(
            uri=self.uri,
            collection=self.coll,
            index_type=index_type,
            consistency="Bounded",
            timeout=600,
            nlist=self.nlist,
            M=self.hnsw_M if index_type == "HNSW" else 0,
            ef_construction=self.hnsw_efc,
            **kw,
        )

    def segments(self) -> list[dict]:
        """The loaded segments as the query node reports them (rows, index name)."""
        from pymilvus import connections, utility

        alias = f"bench{os.getpid()}"
        connections.connect(alias, uri=self.uri, timeout=60)
        try:
            return [
                {"id": s.segmentID, "rows": s.num_rows, "state": int(s.state), "index": s.index_name}
                for s in utility.get_query_segment_info(self.coll, using=alias)
            ]
        finally:
            connections.disconnect(alias)

    def load_data(self):
        """Insert every vector (pixquery's `milvus` kind: upserts of <= 2,000 rows), flush, compact."""
        from pixquery.indexes import milvus as mv

        log(f"milvus server: inserting {len(self.x):,} rows into {self.coll}")
        t0 = time.perf_counter()
        index = mv.Index(self.x.shape[1], self._config("FLAT"))
        index.add(self.ids, self.x)
        d = {"insert_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        index._client.flush(self.coll)
        d["flush_s"] = time.perf_counter() - t0
        index.close()
        c = self.admin()
        t0 = time.perf_counter()
        job = c.compact(self.coll)
        while c.get_compaction_state(job) != "Completed" and time.perf_counter() - t0 < 3600:
            time.sleep(2)
        d["compact_s"] = time.perf_counter() - t0
        d["load_s_total"] = d["insert_s"] + d["flush_s"] + d["compact_s"]
        d["rows_per_s"] = len(self.x) / d["insert_s"]
        d["server_peak_mb"] = self.srv.peak_mb() if self.srv else None
        c.close()
        self.data = d
        log(
            f"milvus server: inserted in {d['insert_s']:.1f} s ({d['rows_per_s']:.0f} rows/s), flush "
            f"{d['flush_s']:.1f} s, compaction {d['compact_s']:.1f} s"
        )

    def _build_failures(self) -> list[str]:
        """The index node's "failed to build index" lines in the server's log (a server started here):
        Milvus retries a failed build forever and describe_index keeps saying InProgress."""
        if not self.srv:
            return []
        log_file = self.srv.root / "data" / "logs" / "milvus-stdout.log"
        try:
            return [ln for ln in log_file.read_text(errors="replace").splitlines() if "failed to build index" in ln]
        except OSError:
            return []

    def _wait_index(self, c, timeout_s: float = 4 * 3600, stall_s: float = 3600) -> dict:
        n, t0, last, t_last = len(self.x), time.perf_counter(), None, time.perf_counter()
        failed0 = len(self._build_failures())
        while True:
            desc = c.describe_index(self.coll, "vector")
            if desc.get("state") == "Failed":
                raise RuntimeError(f"index build failed: {desc}")
            failures = self._build_failures()[failed0:]
            if failures:
                reason = failures[-1].split("[error=", 1)[-1][:200]
                raise RuntimeError(f"the index node fails to build it (and retries forever): {reason}")
            if time.perf_counter() - t_last > stall_s:
                raise TimeoutError(f"no progress in {stall_s:.0f} s: {desc}")
            got = (desc.get("indexed_rows"), desc.get("pending_index_rows"), desc.get("total_rows"))
            if got != last:
                log(f"  index: indexed {got[0]:,} of {got[2]:,}, pending {got[1]:,}")
                last, t_last = got, time.perf_counter()
            if desc.get("total_rows") == n and desc.get("indexed_rows") == n and desc.get("pending_index_rows") == 0:
                return desc
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"index not built in {timeout_s:.0f} s: {desc}")
            time.sleep(2)

    def server_index(self, index_type: str, params: dict, knob, values):
        from pixquery.indexes import milvus as mv

        cfg = self._config(index_type)
        build = mv.Index._build_params(types.SimpleNamespace(config=cfg, dim=self.x.shape[1]))
        name = f"milvus {index_type}" + "".join(f" {k}={v}" for k, v in build.items())
        log(f"{name}: building the index on {len(self.x):,} rows")
        c = self.admin()
        c.release_collection(self.coll)
        c.drop_index(self.coll, "vector")
        ip = c.prepare_index_params()
        ip.add_index(field_name="vector", index_type=index_type, metric_type="IP", params=build, index_name="vector")
        t0 = time.perf_counter()
        c.create_index(self.coll, ip, sync=False)  # returns at once: _wait_index watches the build
        desc = self._wait_index(c)
        index_s = time.perf_counter() - t0
        c.close()
        info = {
            "name": name,
            "engine": self.engine,
            "index": index_type,
            "params": dict(build),
            "index_s": index_s,
            "build_s": self.data["load_s_total"] + index_s,
            **self.data,
            "described": {
                k: desc.get(k) for k in ("index_type", "nlist", "m", "nbits", "M", "efConstruction") if k in desc
            },
            "server_rss_built_mb": self.srv.rss_mb() if self.srv else None,
            "server_peak_build_mb": self.srv.peak_mb() if self.srv else None,
        }
        log(
            f"{name}: index built in {index_s:.1f} s; server RSS {info['server_rss_built_mb']} MB, "
            f"peak since start {info['server_peak_build_mb']} MB"
        )
        if self.srv:  # a fresh process: its RSS after loading is this index's
            info["restart_s"] = self.srv.restart()
        info["server_rss_empty_mb"] = self.srv.rss_mb() if self.srv else None
        t0 = time.perf_counter()
        index = mv.Index(self.x.shape[1], cfg)  # attaches and loads the collection
        for _ in range(600):  # until the query node serves the indexed segments (not the interim index)
            segs = self.segments()  # (FLAT: Milvus builds no index file, its segments name none)
            if sum(s["rows"] for s in segs) == len(self.x) and (index_type == "FLAT" or all(s["index"] for s in segs)):
                break
            time.sleep(1)
        else:
            log(f"{name}: WARNING not every loaded segment has its index: {segs}")
        index.search(self.q[:1], 10)
        info["reload_s"] = time.perf_counter() - t0
        info["segments"] = [{"rows": s["rows"], "index": s["index"]} for s in segs]
        info["server_pid"] = self.pid
        info["server_rss_mb"] = _proc_kb(self.pid, "VmRSS") / 1024 if self.pid else None
        log(
            f"{name}: loaded in {info['reload_s']:.1f} s, {len(segs)} segments "
            f"{[s['rows'] for s in segs]}, server RSS {info['server_rss_mb']} MB"
        )
        for v in values:
            if knob:
                setattr(index.config, knob, v)
            row = dict(info, knob=knob, value=v, label=name if knob is None else f"{name} {knob}={v}")
            self._measure(index, row, self.pid)
            row["server_rss_mb"] = _proc_kb(self.pid, "VmRSS") / 1024 if self.pid else None
            row["server_peak_mb"] = _proc_kb(self.pid, "VmHWM") / 1024 if self.pid else None
            self.rows.append(row)
            log(
                f"{row['label']}: R@10 {row['recall10']:.4f} p50 {row['p50_ms']:.3f} ms p99 {row['p99_ms']:.3f} "
                f"server CPU {row['server_cpu_ms_per_query']:.2f} ms/q, RSS {row['server_rss_mb']:.0f} MB, load "
                f"{row['load_before']} -> {row['load_avg']}"
            )
        index.close()
        self.save()

    def rpc_floor(self) -> dict:
        """One search on a flushed 1,000-row collection (brute force; below the size Milvus indexes):
        pymilvus + gRPC + the server's fixed cost, with consistency Bounded (the bench's) and Strong
        (pixquery's default: each search waits for the server's next time tick)."""
        from pixquery.indexes import milvus as mv

        index = mv.Index(
            self.x.shape[1], mv.Config(uri=self.uri, index_type="FLAT", consistency="Bounded", timeout=600)
        )
        index.add(self.ids[:1000], self.x[:1000])
        index._client.flush(index.config.collection)
        index.search(self.q[:1], 10)
        out = {"rows": 1000}
        for cons in ("Bounded", "Strong"):
            index.config.consistency = cons
            load = wait_load(self.max_load, self.quiet_wait)
            p50, p99, n, cpu = _lat_with_cpu(
                index.search, self.q, 10, self.pid, self.budget if cons == "Bounded" else 3.0
            )
            out[cons] = {"p50_ms": p50, "p99_ms": p99, "n": n, "server_cpu_ms_per_query": cpu, "load": load}
        index.drop()
        index.close()
        return out

    def drop(self):
        c = self.admin()
        if c.has_collection(self.coll):
            c.drop_collection(self.coll)
        c.close()


def server_summary(rows: list[dict], n: int) -> dict:
    """milvus_summary, plus per Milvus index type the fastest configuration at recall@10 >= 0.95."""
    out = milvus_summary(rows, n)
    fai95 = min(
        (r for r in rows if not r["engine"].startswith("milvus") and r["recall10"] >= 0.95),
        key=lambda r: r["p50_ms"],
        default=None,
    )
    per = []
    for t in dict.fromkeys(r["index"] for r in rows if r["engine"].startswith("milvus")):
        rs = [r for r in rows if r["engine"].startswith("milvus") and r["index"] == t]
        best = min((r for r in rs if r["recall10"] >= 0.95), key=lambda r: r["p50_ms"], default=None)
        top = max(rs, key=lambda r: r["recall10"])
        per.append(
            {
                "index": t,
                "best95": best and best["label"],
                "p50": best and best["p50_ms"],
                "recall": best and best["recall10"],
                "max_recall": top["recall10"],
                "max_recall_label": top["label"],
                "ratio": best["p50_ms"] / fai95["p50_ms"] if best and fai95 else None,
                "rss_mb": rs[0].get("server_rss_mb"),
                "index_s": rs[0].get("index_s"),
            }
        )
    out["per_type"] = per
    out["faiss95"] = fai95 and {
        "label": fai95["label"],
        "p50": fai95["p50_ms"],
        "recall": fai95["recall10"],
        "mem_mb": fai95["client_rss_delta_mb"],
    }
    return out


def fmt_server_table(rows: list[dict]) -> list[str]:
    lines = [
        "| configuration | build s (insert+flush+compact / index) | reopen s | segments | memory MB | p50 ms | p99 ms "
        "| server CPU ms/query | batch q/s | R@10 | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["engine"].startswith("milvus"):
            build = f"{r['build_s']:.0f} ({r['load_s_total']:.0f} / {r['index_s']:.0f})"
            segs = r.get("segments") or []
            seg = f"{len(segs)}: " + "+".join(f"{s['rows'] // 1000}k" for s in segs)
            mem = (
                f"server {r['server_rss_mb']:.0f} (peak {r['server_peak_mb']:.0f}; building "
                f"{r['server_peak_build_mb']:.0f})"
                if r.get("server_peak_build_mb")
                else f"server {r['server_rss_mb']:.0f}"
                if r.get("server_rss_mb")
                else "-"
            )
            cpu = f"{r['server_cpu_ms_per_query']:.2f}" if r.get("server_cpu_ms_per_query") is not None else "-"
            reopen = f"{r['reload_s']:.1f}"
        else:
            build, seg, mem, cpu, reopen = (
                f"{r['build_s']:.1f}",
                "-",
                f"{r['client_rss_delta_mb']:.0f}",
                "(in process)",
                "-",
            )
        load = f"{r.get('load_before', '')}/{r['load_avg']}" if r.get("load_before") is not None else f"{r['load_avg']}"
        lines.append(
            f"| {r['label']} | {build} | {reopen} | {seg} | {mem} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{cpu} | {r['qps_batch']:.0f} | {r['recall10']:.4f} | {load} |"
        )
    return lines


def write_server_report(out: Path, res: dict):
    n, m, s, sv = res["n"], res["machine"], res["summary"], res["server"]
    L = [
        f"# Milvus {sv['version']} standalone server against faiss, N = {n:,}",
        "",
        f"Run {m['date']} by `{res['command']}` ({res['wall_s'] / 60:.1f} min).",
        "",
        "## Machine and server",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}, Python {m['python']}; "
        f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}. Shared with other jobs: load average "
        f"{m['load_avg_start']} at the start, {res['load_avg_end']} at the end; each row gives the 1-minute load "
        f"when its measurement started / ended (latency waits up to {res['quiet_wait']:.0f} s for the load to "
        f"fall to {res['max_load']}).",
        "",
        f"Server: {sv['what']}. {sv.get('config', '')}",
        "",
        "## Data",
        "",
        f"{n:,} synthetic CLIP-like image vectors (512-d, bench/synthetic.py, seed 0) queried with the {res['n_eval']} "
        "real CLIP ViT-B/32 text vectors of bench/indexes.py; recall@10 against exact inner-product search. "
        "Milvus searches with consistency Bounded (see the fixed cost below for Strong).",
        "",
        "## Index types the server accepts",
        "",
        "Probed at run time (a 2,000-row collection per type, metric IP; acceptance only):",
        "",
        "| index type | accepted | what the server says |",
        "|---|---|---|",
    ]
    for t, p in res["probe"].items():
        said = json.dumps(p["reported"]) if p["ok"] else p["error"]
        L.append(f"| {t} | {'yes' if p['ok'] else 'no'} | {said} |")
    L += [
        "",
        "## Target",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| {s['target']['target']} | {s['target']['measured']} | {'yes' if s['target']['met'] else '**no**'} |",
        "",
        "## Latency ratio Milvus / faiss at equal recall",
        "",
        "Fastest p50 on each side among the configurations below that reach the recall floor.",
        "",
        "| recall@10 floor | Milvus (p50 ms) | faiss (p50 ms) | ratio milvus/faiss | ratio vs faiss IVF |",
        "|---|---|---|---|---|",
    ]
    for a in s["at_recall"]:
        mcell = f"{a['milvus']} ({a['milvus_p50']:.2f})" if a["milvus"] else "none reaches it"
        fcell = f"{a['faiss']} ({a['faiss_p50']:.3f})" if a["faiss"] else "none reaches it"
        ratio = f"{a['ratio']:.1f}x" if a["ratio"] else "-"
        rivf = f"{a['ratio_vs_ivf']:.1f}x" if a["ratio_vs_ivf"] else "-"
        L.append(f"| {a['floor']} | {mcell} | {fcell} | {ratio} | {rivf} |")
    f95 = s.get("faiss95")
    L += [
        "",
        "## Per Milvus index type, at recall@10 >= 0.95",
        "",
        f"Against faiss's fastest at that recall: {f95['label']}, {f95['p50']:.3f} ms p50, recall {f95['recall']:.4f}, "
        f"{f95['mem_mb']:.0f} MB."
        if f95
        else "faiss reaches no 0.95.",
        "",
        "| Milvus index | fastest config >= 0.95 | p50 ms | recall@10 | ratio vs faiss | best recall reached | "
        "index build s | server RSS MB (loaded) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in s["per_type"]:
        ratio = f"{p['ratio']:.1f}x" if p["ratio"] else "-"
        rss = f"{p['rss_mb']:.0f}" if p["rss_mb"] else "-"
        L.append(
            f"| {p['index']} | {p['best95']} | {p['p50']:.2f} | {p['recall']:.4f} | {ratio} | "
            f"{p['max_recall']:.4f} | {p['index_s']:.0f} | {rss} |"
            if p["best95"]
            else f"| {p['index']} | none | - | - | - | {p['max_recall']:.4f} ({p['max_recall_label']}) | "
            f"{p['index_s']:.0f} | {rss} |"
        )
    for t, why in res.get("failed", {}).items():
        L.append(f"| {t} | not measured: {why} | - | - | - | - | - | - |")
    d = res.get("data", {})
    L += [
        "",
        "## All configurations",
        "",
        f"build s: Milvus: inserting the {n:,} rows through pixquery's `milvus` kind (upserts of <= 2,000 rows: "
        f"{d.get('insert_s', 0):.0f} s, {d.get('rows_per_s', 0):.0f} rows/s), flush ({d.get('flush_s', 0):.0f} s) and a "
        f"manual compaction that merges the small sealed segments ({d.get('compact_s', 0):.0f} s), done once, plus "
        "building that index type on every sealed segment (create_index until describe_index reports every row "
        "indexed and none pending); faiss: the build in this process. reopen s: load the collection into a freshly "
        "restarted server until the query node serves every segment with its index, and one search. segments: "
        "the sealed segments loaded (rows). memory: Milvus: RSS of the milvus process after that load "
        "(peak since its restart; peak of the process that built the index); faiss: growth of this process "
        "after the build. p50/p99: single queries (faiss: one thread; Milvus: whatever its server uses, see its "
        "CPU ms per query), p50 the lowest of three rounds' medians. batch q/s: all queries in one call.",
        "",
    ]
    L += fmt_server_table(res["rows"])
    rf = res.get("rpc_floor")
    if rf:
        b, st = rf["Bounded"], rf["Strong"]
        L += [
            "",
            f"Fixed cost of a Milvus query here (pymilvus + gRPC over loopback + the server, brute force over "
            f"{rf['rows']:,} flushed rows): consistency Bounded p50 {b['p50_ms']:.2f} ms, p99 {b['p99_ms']:.2f} ms "
            f"(server CPU {b['server_cpu_ms_per_query']:.2f} ms/query); consistency Strong (pixquery's default) "
            f"p50 {st['p50_ms']:.1f} ms, p99 {st['p99_ms']:.1f} ms: a Strong search waits for the server's next "
            "time tick (proxy.timeTickInterval 200 ms).",
        ]
    if res.get("notes"):
        L += ["", "## Notes", ""] + [f"* {x}" for x in res["notes"]]
    L.append("")
    out.write_text("\n".join(L))


def run_milvus_server(args, res: dict, x, ids, eval_q, truth10, n: int):
    from importlib.metadata import version

    import milvus_standalone as ms
    from pymilvus import MilvusClient

    from pixquery.indexes.ivf import auto_nlist

    res["machine"]["versions"]["pymilvus"] = version("pymilvus")
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server we started (finally:) on a kill
    srv = None
    if args.milvus_server:
        extra = ("queryNode.enableDisk=true",) + tuple(args.milvus_config or ())
        srv = ms.Standalone(args.milvus_server, extra_config=extra, log=log)
        srv.start()
        uri, pid = srv.uri, srv.pid
    else:
        uri = args.milvus_uri
        pid = ms.pid_listening(int(uri.rsplit(":", 1)[1].split("/")[0]))
    stem = args.out / f"indexes-milvus-standalone-{n}"
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        c = MilvusClient(uri=uri, timeout=60)
        ver = c.get_server_version()
        c.close()
        what = (
            f"Milvus {ver} standalone (the `milvus` package's embedded Milvus: one process with its coordinators, "
            "query / data / index nodes, an embedded etcd, RocksMQ and local storage), on this machine's "
            f"{CORES} cores beside the benchmark"
        )
        what += f", started by this run from {args.milvus_server} on free ports {srv.ports}" if srv else f", at {uri}"
        res["server"] = {
            "version": ver,
            "uri": uri,
            "pid": pid,
            "what": what,
            "config": (
                "Configuration: the package's defaults (segment maxSize 512 MB, sealProportion "
                "0.23, queryNode.segcore.interimIndex on) with queryNode.enableDisk=true "
                "(DISKANN)" + "".join(f", {kv}" for kv in (args.milvus_config or [])) + "."
                if srv
                else ""
            ),
            "rss_idle_mb": ms.proc_kb(pid, "VmRSS") / 1024,
        }
        log(f"milvus server {ver} at {uri}, pid {pid}, RSS {res['server']['rss_idle_mb']:.0f} MB")
        log("milvus: probing the index types of the server")
        res["probe"] = probe_milvus_types(uri=uri)
        accepted = [t for t, p in res["probe"].items() if p["ok"]]
        if args.milvus_types:
            accepted = [t for t in args.milvus_types.split(",") if t in accepted]
        log("milvus: measuring", accepted)
        nlist = args.milvus_nlist or (auto_nlist(n) if n < 500_000 else 4096)
        work = Path(args.workdir or tempfile.mkdtemp(prefix="pixquery-mbench-"))
        res["n_eval"], res["max_load"], res["quiet_wait"] = len(eval_q), args.max_load, args.quiet_wait

        def save():
            res["rows"] = mb.rows
            res["data"] = mb.data
            res["summary"] = server_summary(mb.rows, n) if mb.rows else None
            res["notes"] = list(args.note or [])
            res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
            res["wall_s"] = time.time() - T_START
            Path(f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
            if res["summary"]:
                write_server_report(Path(f"{stem}.md"), res)

        mb = ServerBench(
            x,
            ids,
            eval_q,
            truth10,
            work,
            args.quick,
            uri,
            srv,
            pid,
            nlist,
            16,
            args.hnsw_efc,
            args.max_load,
            args.quiet_wait,
            save,
        )
        res["rpc_floor"] = mb.rpc_floor()
        log("milvus fixed cost per query:", res["rpc_floor"])
        mb.load_data()
        big = n >= 500_000
        for t in accepted:
            knob, small_vals, big_vals = SERVER_SWEEPS[t]
            vals = big_vals if big else small_vals
            try:
                mb.server_index(t, {}, knob, (vals[2:4] or vals) if args.quick else vals)
            except Exception as e:  # noqa: BLE001  (one index type failing is a result; the rest still run)
                log(f"milvus {t}: FAILED {type(e).__name__}: {e}")
                res.setdefault("failed", {})[t] = f"{type(e).__name__}: {str(e)[:300]}"
        mb.drop()
    finally:
        if srv:
            res.setdefault("server", {})["starts_s"] = srv.starts
            srv.cleanup()
    # faiss in this process, the server stopped: exact, IVF float32, HNSW with the server's M / efConstruction
    faiss_nlist = args.faiss_nlist or auto_nlist(n)
    mb.inprocess("faiss flat float32 (exact)", "flat", None, [None])
    npr = [16] if args.quick else ([8, 16, 32, 64, 128, 256] if n < 500_000 else [32, 64, 128, 256, 384])
    mb.inprocess(f"faiss ivf{faiss_nlist} float32", "ivf", "nprobe", npr, nlist=faiss_nlist, storage="float32")
    efs = [64] if args.quick else ([16, 32, 64, 128, 256, 512] if n < 500_000 else [64, 128, 256, 512, 1024, 2048])
    mb.inprocess(
        f"faiss hnsw M16 efC{args.hnsw_efc}",
        "hnsw",
        "ef_search",
        efs,
        M=16,
        ef_construction=args.hnsw_efc,
        backend="faiss",
    )
    save()
    t = res["summary"]["target"]
    log(("MET    " if t["met"] else "NOT MET"), t["target"], "--", t["measured"])
    for a in res["summary"]["at_recall"]:
        log(
            f"recall >= {a['floor']}: milvus {a['milvus']} {a['milvus_p50']} ms | faiss {a['faiss']} {a['faiss_p50']} ms "
            f"| ratio {a['ratio']}"
        )
    log(f"wrote {stem}.md, .json")
    if args.workdir is None:
        shutil_rmtree(work)


# ---------------------------------------------------------------------------------- report


def targets(rows: list[dict], n: int, bw: dict | None, dim: int) -> list[dict]:
    by = {r["label"]: r for r in rows}
    out = []
    study_flat = by.get("study Flat (faiss default threads)")
    flat = by.get("flat float32")
    if n < 100_000:
        d = by.get("auto (no queries given)")
        if d:
            out.append(
                {
                    "target": "N=20,120, k=10: the default index (auto) reaches recall@10 >= 0.99 at <= 0.3 ms p50",
                    "measured": f"recall@10 {d['recall10']:.4f}, p50 {d['p50_ms']:.3f} ms (chose {d['params']['chosen']['kind']} "
                    f"{json.dumps(d['params']['chosen']['params'])})",
                    "met": d["recall10"] >= 0.99 and d["p50_ms"] <= 0.3,
                }
            )
        ok = [r for r in rows if r.get("recall1000", 0) >= 0.99 and r["family"] != "study" and "p50_ms_1000" in r]
        if ok and study_flat:
            best = min(ok, key=lambda r: r["p50_ms_1000"])
            ratio = study_flat["p50_ms_1000"] / best["p50_ms_1000"]
            ratio_flat = flat["p50_ms_1000"] / best["p50_ms_1000"] if flat else float("nan")
            out.append(
                {
                    "target": "N=20,120, k=1000: recall@1000 >= 0.99 at least 4x faster than the study's Flat (same run)",
                    "measured": f"{best['label']}: recall@1000 {best['recall1000']:.4f}, p50 {best['p50_ms_1000']:.3f} ms; "
                    f"study Flat {study_flat['p50_ms_1000']:.3f} ms -> {ratio:.1f}x; "
                    f"(our one-thread exact flat {flat['p50_ms_1000']:.3f} ms -> {ratio_flat:.1f}x)",
                    "met": ratio >= 4,
                }
            )
    else:
        ok = [r for r in rows if r["recall10"] >= 0.95 and r["size_bytes"] <= 1.1e9 and r["family"] != "study"]
        if ok:
            best = min(ok, key=lambda r: r["p50_ms"])
            out.append(
                {
                    "target": "N=1,000,000, k=10: recall@10 >= 0.95 at <= 2 ms p50, index <= 1.1 GB in memory",
                    "measured": f"{best['label']}: recall@10 {best['recall10']:.4f}, p50 {best['p50_ms']:.3f} ms, "
                    f"{best['size_bytes'] / 1e9:.3f} GB on disk, RSS +{best['rss_load_mb'] / 1e3 * 1.048576:.3f} GB when loaded",
                    "met": best["p50_ms"] <= 2.0,
                }
            )
        if flat and bw:
            scanned = n * dim * 4
            bound = scanned / bw["1_thread"] * 1e3
            out.append(
                {
                    "target": "N=1,000,000: exact flat search within 1.5x of the memory-bandwidth bound",
                    "measured": f"{scanned / 1e9:.3f} GB scanned / {bw['1_thread'] / 1e9:.1f} GB/s (one thread) = "
                    f"{bound:.1f} ms bound; flat float32 p50 {flat['p50_ms']:.1f} ms = {flat['p50_ms'] / bound:.2f}x",
                    "met": flat["p50_ms"] <= 1.5 * bound,
                }
            )
    return out


def fmt_table(rows: list[dict], big_k: bool) -> list[str]:
    head = "| configuration | build s | add 1% s | size MB | load s (mmap) | p50 ms | p99 ms | batch q/s | R@10 |"
    sep = "|---|---|---|---|---|---|---|---|---|"
    if big_k:
        head += " R@1000 | p50 ms k=1000 |"
        sep += "---|---|"
    lines = [head, sep]
    for r in rows:
        add = f"{r['add_s']:.2f}" if "add_s" in r else "-"
        line = (
            f"| {r['label']} | {r['build_s']:.1f} | {add} | {r['size_bytes'] / 2**20:.1f} | "
            f"{r['load_s']:.2f} ({r['load_mmap_s']:.3f}) | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['qps_batch']:.0f} | {r['recall10']:.4f} |"
        )
        if big_k:
            line += f" {r['recall1000']:.4f} | {r['p50_ms_1000']:.2f} |" if "recall1000" in r else " - | - |"
        lines.append(line)
    return lines


def write_report(out: Path, res: dict):
    n = res["n"]
    m = res["machine"]
    L = [f"# Index benchmark, N = {n:,}", ""]
    L += [f"Run {m['date']} by `{res['command']}` ({res['wall_s'] / 60:.1f} min).", ""]
    L += [
        "## Machine",
        "",
        f"{m['cpu']}, {m['cores']} cores, caches {m['caches']}, {m['ram_gib']} GiB RAM, {m['os']}, Python {m['python']}; "
        f"{', '.join(f'{k} {v}' for k, v in m['versions'].items())}. The machine is shared with other engineers' jobs: "
        f"load average {m['load_avg_start']} at the start, {res['load_avg_end']} at the end (each row records its own); "
        "latency p50 is the lowest of three rounds' medians to damp that noise.",
        "",
    ]
    if res.get("bandwidth"):
        bw = res["bandwidth"]
        L += [
            f"Memory read bandwidth (dot product over 2 x 512 MiB): {bw['1_thread'] / 1e9:.1f} GB/s one thread, "
            f"{bw[f'{CORES}_thread'] / 1e9:.1f} GB/s {CORES} threads.",
            "",
        ]
    L += [
        "## Data",
        "",
        f"{n:,} synthetic CLIP-like image vectors (512-d, bench/synthetic.py) queried with real CLIP ViT-B/32 text vectors "
        f"(prompt-ensembled ImageNet class names): {res['n_eval']} evaluation queries for recall@10 and latency, "
        f"{res['n_q1000']} of them for recall@1000; 200 other text vectors calibrate `auto (200 text queries)`. "
        "Recall is against exact inner-product search.",
        "",
    ]
    cal = res.get("calibration")
    if cal:
        L += [
            "Synthetic vs real statistics (`python bench/synthetic.py`):",
            "",
            "| statistic | real CLIP text vectors | synthetic images | target for images |",
            "|---|---|---|---|",
            f"| norm of the mean vector | {cal['text']['norm_of_mean']:.3f} | {cal['images']['norm_of_mean']:.3f} | ~0.7 (cone) |",
            f"| mean pairwise cosine | {cal['text']['mean_pairwise_cos']:.3f} | {cal['images']['mean_pairwise_cos']:.3f} | ~0.5 |",
            f"| nearest-neighbour cosine | {cal['text']['top1_nn_cos']:.3f} | {cal['images']['top1_nn_cos']:.3f} | high (bursts) |",
            f"| PCA components for 50% / 90% variance | {cal['text']['pca_50pct']} / {cal['text']['pca_90pct']} | "
            f"{cal['images']['pca_50pct']} / {cal['images']['pca_90pct']} | power law |",
            f"| image-text cosine, matching / unrelated | - | {cal['image_text_cos_matching']:.3f} / {cal['image_text_cos_unrelated']:.3f} | ~0.30 / ~0.18 |",
            f"| zero-shot top-1 with the real text classifier | - | {cal['zero_shot_top1']:.3f} | 0.63 (ViT-B/32) |",
            f"| same-class / other-class image cosine | - | {cal['same_class_cos']:.3f} / {cal['diff_class_cos']:.3f} | assumed ~0.68 / ~0.49 |",
            "",
        ]
    L += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for t in res["targets"]:
        L.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    L += [
        "",
        "## All configurations",
        "",
        "Search-time knobs are swept without rebuilding (build, add, size and load are per build). `add 1%` adds "
        f"{res.get('add_n', '?')} new vectors to the loaded index and runs one query (annoy: that rebuilds the forest). "
        "p50/p99: single queries, one thread (the study's Flat and HNSW use faiss's default of all cores). "
        "batch q/s: all evaluation queries in one call, all cores.",
        "",
    ]
    L += fmt_table(res["rows"], big_k=True)
    if res.get("auto"):
        L += ["", "## What auto chose", ""]
        for label, p in res["auto"].items():
            c = p["chosen"]
            L.append(
                f"* **{label}**: {c['kind']} {json.dumps(c['params'])}, measured recall@{c.get('k', 10)} "
                f"{c['recall']} on {c.get('queries', '')} ({c.get('n_queries', '')} queries), p50 {c.get('p50_ms', '-')} ms. "
                "Candidates: "
                + "; ".join(
                    f"{x['kind']} {json.dumps({k: v for k, v in x['params'].items() if k in ('storage', 'M', 'ef_search', 'nprobe', 'rerank_min', 'nlist')})}"
                    f" recall {x.get('recall', '-')} p50 {x.get('p50_ms', '-')} ms build {x.get('build_s', '-')} s"
                    for x in c.get("candidates", [])
                )
            )
    if res.get("real"):
        L += [
            "",
            "## The 1000 real CLIP ViT-B/32 vectors (900 indexed, 100 held out as queries, k=10)",
            "",
            "| kind | params | recall@10 | ids and order identical to flat |",
            "|---|---|---|---|",
        ]
        for r in res["real"]:
            L.append(f"| {r['kind']} | {json.dumps(r['params'])} | {r['recall10']:.3f} | {r['identical_to_flat']} |")
    L += [
        "",
        f"Frontier: indexes-{n}-frontier.png (recall vs single-query queries/s, one thread; the study's configs as stars).",
        "",
    ]
    out.write_text("\n".join(L))


def plot(rows: list[dict], path: Path, n: int):
    """recall vs single-query queries/s, ann-benchmarks style; recall on a "nines" axis
    (-log10(1 - recall)) so that 0.9, 0.99 and 0.999 are evenly spaced."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.scale import FuncScale

    def fwd(r):
        return -np.log10(np.clip(1 - np.asarray(r, float), 1e-4, 1))

    def inv(v):
        return 1 - 10 ** (-np.asarray(v, float))

    fig, axes = plt.subplots(1, 2, figsize=(15, 7))
    fams: dict[str, list[dict]] = {}
    for r in rows:
        fams.setdefault(r["family"] if r["family"] not in ("study", "auto", "flat") else r["label"], []).append(r)
    palette = {
        "flat": "#2ca02c",
        "hnsw": "#9467bd",
        "faiss": "#c5b0d5",
        "ivf": "#ff7f0e",
        "annoy": "#1f77b4",
        "sharded": "#7f7f7f",
        "auto": "#d62728",
    }
    shades: dict[str, int] = {}

    def colour(fam: str):
        base = next((c for key, c in palette.items() if fam.startswith(key)), "#17becf")
        j = shades[base] = shades.get(base, -1) + 1
        return matplotlib.colors.to_rgba(base, alpha=1.0 - 0.25 * (j % 3))

    study_marker = {"Flat": "*", "HNSW": "P", "Annoy": "X"}
    ticks = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999]
    colours = {fam: colour(fam) for fam in sorted(fams)}
    for ax, rkey, pkey, k in ((axes[0], "recall10", "p50_ms", 10), (axes[1], "recall1000", "p50_ms_1000", 1000)):
        for fam, rs in sorted(fams.items()):
            rs = [r for r in rs if rkey in r]
            if not rs:
                continue
            xs = np.array([r[rkey] for r in rs])
            ys = np.array([1e3 / r[pkey] for r in rs])
            kind = rs[0]["family"]
            c = colours[fam]
            if kind == "study":
                m = next((v for key, v in study_marker.items() if key in fam), "*")
                ax.scatter(xs, ys, marker=m, s=260, color="black", edgecolor="white", zorder=6, label=fam)
            elif kind == "auto":
                ax.scatter(xs, ys, marker="D", s=110, color=c, edgecolor="k", zorder=7, label=fam + " (default)")
            elif len(rs) == 1:
                ax.scatter(xs, ys, marker="s", s=45, color=c, edgecolor="k", zorder=5, label=fam)
            else:
                order = np.argsort(xs, kind="stable")
                ax.plot(xs[order], ys[order], "o-", ms=4, lw=1.4, color=c, label=fam)
        ax.set_xscale(FuncScale(ax, (fwd, inv)))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks[:-1]] + ["1.0"], fontsize=8)
        ax.set_xlim(-0.05, 1 - 10**-4.25)  # recall 1.0 is drawn at 0.9999
        ax.set_yscale("log")
        ax.set_xlabel(f"recall@{k} of text queries against exact search (axis in 'nines')")
        ax.set_ylabel(f"queries/s, one query at a time, one thread, k={k}")
        ax.set_title(f"N = {n:,}, k = {k}")
        ax.grid(True, which="both", alpha=0.3)
    if n < 100_000:
        axes[0].axhline(1e3 / 0.3, color="grey", ls=":", lw=1)
        axes[0].text(0.0, 1e3 / 0.3 * 1.08, "0.3 ms", color="grey", fontsize=8)
    else:
        axes[0].axhline(1e3 / 2.0, color="grey", ls=":", lw=1)
        axes[0].text(0.0, 1e3 / 2.0 * 1.08, "2 ms", color="grey", fontsize=8)
    handles, labels = [], []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("pixquery indexes: recall vs speed (up and to the right is better)")
    fig.tight_layout(rect=(0, 0.15, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20120, help="collection size (20120 = the study's, 1000000)")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--workdir", type=Path, default=None, help="where indexes are saved (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="few configurations (a smoke test)")
    ap.add_argument("--auto-1m", action="store_true", help="also run auto at 1M (one more IVF build)")
    ap.add_argument("--hnsw-1m", action="store_true", help="also build hnsw at 1M (~6 min)")
    ap.add_argument("--nlist-1m", type=int, default=0, help="IVF cells at 1M (0: the kind's default, 8192)")
    ap.add_argument("--replot", action="store_true", help="rewrite the .md and .png from the .json only")
    ap.add_argument(
        "--kinds",
        default=None,
        help="comma list of kinds to run (default: every kind but milvus, as before). `milvus` runs each "
        "index type the embedded milvus-lite accepts beside faiss flat / IVF / HNSW and writes "
        "indexes-milvus-<N>.md/.json; other names (flat, ivf, hnsw, annoy, sharded, auto, study, "
        "faiss) keep only those rows of the usual run",
    )
    ap.add_argument(
        "--faiss-nlist",
        type=int,
        default=0,
        help="--kinds milvus: IVF cells for faiss ivf and Milvus IVF_* (0: ivf's default, 8 sqrt(n))",
    )
    ap.add_argument("--note", action="append", help="--kinds milvus: a line for the report's notes (repeatable)")
    ap.add_argument(
        "--milvus-uri",
        default="",
        help="--kinds milvus: measure the Milvus server at this uri (http://HOST:PORT) instead of milvus-lite; "
        "writes indexes-milvus-standalone-<N>.md/.json",
    )
    ap.add_argument(
        "--milvus-server",
        default="",
        help="--kinds milvus: start a Milvus standalone with this `milvus-server` script (the `milvus` "
        "package) on free ports in a temp folder, restart it before loading each index (its RSS "
        "is then that index's), stop it at the end; as --milvus-uri otherwise",
    )
    ap.add_argument(
        "--milvus-config",
        action="append",
        help="--milvus-server: one more server setting, key=value (milvus.yaml's dotted key; repeatable)",
    )
    ap.add_argument(
        "--milvus-types", default="", help="--milvus-uri/--milvus-server: only these index types (comma list)"
    )
    ap.add_argument(
        "--milvus-nlist",
        type=int,
        default=0,
        help="--milvus-uri/--milvus-server: nlist of Milvus IVF_* per segment (0: ivf's default below "
        "500,000 rows, 4096 from there)",
    )
    ap.add_argument(
        "--hnsw-efc",
        type=int,
        default=200,
        help="--milvus-uri/--milvus-server: efConstruction of Milvus HNSW and faiss hnsw (M 16)",
    )
    ap.add_argument(
        "--max-load",
        type=float,
        default=3.0,
        help="--milvus-uri/--milvus-server: before each latency measurement wait for the 1-minute load "
        "average to fall to this (the machine is shared) ...",
    )
    ap.add_argument("--quiet-wait", type=float, default=60.0, help="... for at most this many seconds")
    args = ap.parse_args(argv)
    n = args.n
    kinds = None if not args.kinds else {k.strip() for k in args.kinds.split(",") if k.strip()}
    std_kinds = None if kinds is None else kinds - {"milvus"}
    run_std = kinds is None or bool(std_kinds)
    suffix = "" if std_kinds is None else "-" + "+".join(sorted(std_kinds))
    if args.replot and kinds and "milvus" in kinds:
        server = bool(args.milvus_uri or args.milvus_server)
        stem = args.out / (f"indexes-milvus-standalone-{n}" if server else f"indexes-milvus-{n}")
        res = json.loads(Path(f"{stem}.json").read_text())
        if args.note:
            res["notes"] = list(args.note)
            Path(f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
        if server:
            res["summary"] = server_summary(res["rows"], n)
        (write_server_report if server else write_milvus_report)(Path(f"{stem}.md"), res)
        return
    if args.replot:
        stem = args.out / f"indexes-{n}"
        res = json.loads(Path(f"{stem}.json").read_text())
        write_report(Path(f"{stem}.md"), res)
        plot(res["rows"], Path(f"{stem}-frontier.png"), n)
        return
    res = {
        "n": n,
        "command": " ".join(["bench/indexes.py"] + (argv if argv is not None else sys.argv[1:])),
        "machine": machine_info(),
    }
    log("machine:", res["machine"]["cpu"], res["machine"]["cores"], "cores")
    if not run_std:  # --kinds milvus only: its own data, report and files
        log("data: generating", n)
        x = synthetic.images(n, seed=0)
        ids = np.arange(n, dtype=np.int64)
        eval_q = synthetic.text_queries()[200:]
        log("exact ground truth")
        gt = faiss.IndexFlatIP(x.shape[1])
        gt.add(x)
        faiss.omp_set_num_threads(CORES)
        _, truth10 = gt.search(eval_q, 10)
        del gt
        gc.collect()
        res["n_eval"] = len(eval_q)
        if args.milvus_uri or args.milvus_server:
            run_milvus_server(args, res, x, ids, eval_q, truth10, n)
        else:
            run_milvus(args, res, x, ids, eval_q, truth10, n)
        return
    res["bandwidth"] = measure_bandwidth()
    log("bandwidth", {k: f"{v / 1e9:.1f} GB/s" for k, v in res["bandwidth"].items()})
    res["calibration"] = synthetic.calibration(20_120)
    log("data: generating", n)
    x = synthetic.images(n, seed=0)
    ids = np.arange(n, dtype=np.int64)
    text = synthetic.text_queries()
    calib, eval_q = text[:200], text[200:]
    q1000 = eval_q[:: max(1, len(eval_q) // (200 if n < 100_000 else 100))]
    extra = synthetic.images(max(100, n // 100), seed=7)
    log("exact ground truth")
    gt = faiss.IndexFlatIP(x.shape[1])
    gt.add(x)
    faiss.omp_set_num_threads(CORES)
    _, truth10 = gt.search(eval_q, 10)
    _, truth1000 = gt.search(q1000, 1000)
    del gt
    res["n_eval"], res["n_q1000"], res["add_n"] = len(eval_q), len(q1000), len(extra)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pixquery-bench-"))
    b = Bench(n, eval_q, truth10, truth1000, q1000, extra, work, args.quick, std_kinds)
    if args.quick:
        B = lambda kind, **p: lambda: ix.build_index(kind, x.shape[1], ids, x, **p)  # noqa: E731
        b.run("study Flat (faiss default threads)", "study", lambda: StudyFlat(x), add=False)
        b.run("flat float32", "flat", B("flat"))
        b.run("auto (no queries given)", "auto", B("auto"))
        b.run("hnsw M16 efC100", "hnsw M16", B("hnsw", M=16, ef_construction=100), "ef_search", [64, 256])
    elif n < 100_000:
        configs_20k(b, x, ids, calib)
    else:
        configs_1m(b, x, ids, calib, args.auto_1m, args.hnsw_1m, args.nlist_1m)
    res["rows"] = b.rows
    res["auto"] = {r["label"]: r["params"] for r in b.rows if r["family"] == "auto"}
    log("real CLIP vectors")
    res["real"] = real_vectors_table()
    res["targets"] = targets(b.rows, n, res["bandwidth"], x.shape[1])
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    res["wall_s"] = time.time() - T_START
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"indexes-{n}{suffix}"
    Path(f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
    write_report(Path(f"{stem}.md"), res)
    plot(b.rows, Path(f"{stem}-frontier.png"), n)
    for t in res["targets"]:
        log(("MET    " if t["met"] else "NOT MET"), t["target"], "--", t["measured"])
    log(f"wrote {stem}.md, .json, -frontier.png")
    shutil_rmtree(work) if args.workdir is None else None
    if kinds and "milvus" in kinds:  # after the usual run, in the same process
        x = ids = None
        gc.collect()
        res_m = {"n": n, "command": res["command"], "machine": machine_info(), "n_eval": len(eval_q)}
        run_milvus(args, res_m, synthetic.images(n, seed=0), np.arange(n, dtype=np.int64), eval_q, truth10, n)


if __name__ == "__main__":
    main()
