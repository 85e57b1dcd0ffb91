"""Every index kind with the real libraries (faiss, hnswlib, annoy): add / search / remove / upsert,
save / load (also memory-mapped), recall against exact search, identical results to flat where
recall is 1.0, k larger than efSearch, and a kill -9 in the middle of a save."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pixquery.errors import PixqueryError
from pixquery.indexes import (
    build_index,
    delete_index,
    index_files,
    index_kind,
    index_size,
    kinds,
    load_index,
    make_config,
    make_index,
    open_index,
)

DIM = 32
ann = pytest.mark.ann  # hnswlib / annoy (the [ann] extra; skipped where not installed)
milvus = pytest.mark.milvus  # pymilvus + milvus-lite (the [milvus] extra; skipped where not installed)
# A Milvus index type that not every milvus-lite offers (2.5: FLAT / IVF_FLAT / AUTOINDEX; 3.x: HNSW
# too): the test skips, with the engine's own reason, where the installed one refuses it.
milvus_hnsw = [milvus, pytest.mark.milvus_index("HNSW")]


@functools.cache
def milvus_lacks(index_type: str) -> str:
    """'' where the installed milvus-lite makes a collection with an `index_type` index, else why
    not (its version and its own message). Asked of the engine itself with pymilvus, not through
    pixquery; embedded, which is the same engine as `milvus-lite server` in both 2.5 and 3.x."""
    from importlib.metadata import version

    from pymilvus import DataType, MilvusClient, MilvusException

    from pixquery.indexes.milvus import _release_lite

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "probe.db"
        client = MilvusClient(str(db))
        try:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("v", DataType.FLOAT_VECTOR, dim=DIM)
            index_params = client.prepare_index_params()
            index_params.add_index(field_name="v", index_type=index_type, metric_type="IP")
            client.create_collection("probe", schema=schema, index_params=index_params)
            return ""
        except MilvusException as e:
            return f"milvus-lite {version('milvus-lite')} has no {index_type} index: {e.message}"
        finally:
            client.close()
            _release_lite(db)


@pytest.fixture(autouse=True)
def _milvus_index_offered(request):
    mark = request.node.get_closest_marker("milvus_index")
    if mark is not None and (why := milvus_lacks(mark.args[0])):
        pytest.skip(why)


def clustered(n: int, dim: int = DIM, seed: int = 0, clusters: int = 40) -> np.ndarray:
    """Unit vectors in a cone with clusters, like CLIP embeddings (small and fast)."""
    rng = np.random.default_rng(seed)
    axis = rng.standard_normal(dim)
    centres = 1.2 * axis / np.linalg.norm(axis) + rng.standard_normal((clusters, dim)) / np.sqrt(dim)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int):
    s = queries @ vectors.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


N = 2000
VECTORS = clustered(N)
IDS = (np.arange(N) * 3 + 7).astype(np.int64)  # not dense, not starting at 0
QUERIES = clustered(50, seed=1)

# kind, params, the recall@10 it must reach on VECTORS (tuned parameters, small data)
CASES = [
    ("flat", {}, 1.0),
    ("flat", {"storage": "float16"}, 0.98),
    ("flat", {"storage": "int8"}, 0.95),
    ("flat", {"storage": "pq4"}, 0.99),
    pytest.param("hnsw", {"M": 16, "ef_construction": 100, "ef_search": 200}, 0.97, marks=ann),
    ("hnsw", {"M": 16, "ef_construction": 100, "ef_search": 200, "backend": "faiss"}, 0.97),
    pytest.param("annoy", {"n_trees": 20, "search_k": 4000}, 0.95, marks=ann),
    ("ivf", {"nlist": 16, "nprobe": 12, "storage": "float32"}, 0.95),
    ("ivf", {"nlist": 16, "nprobe": 12}, 0.95),
    ("ivf", {"nlist": 16, "nprobe": 12, "storage": "int8"}, 0.9),
    ("ivf", {"nlist": 16, "nprobe": 12, "storage": "pq", "pq_m": 8, "rerank": 10}, 0.9),
    ("sharded", {"shard_size": 300}, 1.0),
    pytest.param(
        "sharded", {"shards": 3, "inner": "hnsw", "inner_params": {"M": 16, "ef_search": 200}}, 0.97, marks=ann
    ),
    ("sharded", {"shards": 3, "inner": "hnsw", "inner_params": {"M": 16, "ef_search": 200, "backend": "faiss"}}, 0.97),
    ("auto", {"exact_max": 4096}, 1.0),
    pytest.param("milvus", {"index_type": "FLAT"}, 1.0, marks=milvus),
    pytest.param("milvus", {"index_type": "IVF_FLAT", "nlist": 16, "nprobe": 16}, 1.0, marks=milvus),
    pytest.param("milvus", {"index_type": "HNSW", "M": 16, "ef_construction": 200, "ef": 128}, 0.99, marks=milvus_hnsw),
]
CASE_IDS = [
    f"{k}-{'-'.join(f'{a}={b}' for a, b in p.items()) or 'default'}"
    for k, p, _ in (c.values if hasattr(c, "values") else c for c in CASES)
]


def check_results(scores, ids, nq, k):
    assert scores.shape == (nq, k) and ids.shape == (nq, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    valid = ids >= 0
    s = np.where(valid, scores, -np.inf)
    assert (np.diff(s, axis=1) <= 1e-6).all(), "scores must be best first"
    assert np.isin(ids[valid], IDS).all()
    assert np.isneginf(scores[~valid]).all()


@pytest.mark.parametrize("kind,params,min_recall", CASES, ids=CASE_IDS)
def test_round_trip(kind, params, min_recall, tmp_path):
    index = build_index(kind, DIM, IDS, VECTORS, **params)
    assert index.kind == kind and index.dim == DIM and len(index) == N
    json.dumps(index.params())  # the catalog stores it as JSON

    # search: shape, order, cosine scores, recall against exact
    k = 10
    scores, found = index.search(QUERIES, k)
    check_results(scores, found, len(QUERIES), k)
    true_scores, truth = exact(VECTORS, IDS, QUERIES, k)
    assert recall(found, truth) >= min_recall
    # scores are the cosines of the returned vectors (exactly, unless stored quantised)
    by_id = dict(zip(IDS.tolist(), VECTORS))
    cos = np.array([[QUERIES[i] @ by_id[j] for j in row] for i, row in enumerate(found)])
    quantised = params.get("storage", "float16" if kind == "ivf" else None) in ("float16", "int8")
    assert np.allclose(scores, cos, atol=2e-2 if quantised else 1e-4)

    # single query as a 1-d vector
    s1, i1 = index.search(QUERIES[0], k)
    assert i1.shape == (1, k)

    # remove: gone from results and from len(); removing absent ids is a no-op
    gone = IDS[::10]
    index.remove(gone)
    index.remove(np.array([10**9], np.int64))
    assert len(index) == N - len(gone)
    _, found = index.search(VECTORS[::10][:20], 5)
    assert not np.isin(found, gone).any()

    # upsert: adding a present id replaces its vector; a batch re-adds the removed ones
    index.add(gone, VECTORS[::10])
    assert len(index) == N
    target = IDS[5]
    new_vec = clustered(1, seed=99)[0]
    index.add(np.array([target]), new_vec[None])
    assert len(index) == N
    _, top = index.search(new_vec[None], 3)
    assert top[0, 0] == target
    index.add(np.array([target]), VECTORS[5][None])  # back to the original
    assert len(index) == N

    # save / load, plain and memory-mapped: same results; the folder holds only the live save
    path = tmp_path / "index.idx"
    index.save(path)
    index.save(path)  # a second save replaces the first and cleans it up
    before = index.search(QUERIES, k)
    assert index_kind(path) == kind
    files = index_files(path)
    assert set(os.listdir(path)) == {f.relative_to(path).parts[0] for f in files}
    assert index_size(path) == sum(f.stat().st_size for f in files) > 0
    for mmap in (False, True):
        loaded = load_index(kind, path, mmap=mmap)
        assert len(loaded) == N and loaded.params() == index.params()
        after = loaded.search(QUERIES, k)
        assert (after[1] == before[1]).all()
        assert np.allclose(after[0], before[0], atol=1e-5)
        # changing a loaded (maybe mapped) index never changes the saved file
        loaded.remove(IDS[:100])
        loaded.add(np.array([10**6]), VECTORS[:1])
        assert len(loaded) == N - 99
        _, f2 = loaded.search(VECTORS[:1], 2)
        assert 10**6 in f2[0]
    again = open_index(path)
    assert len(again) == N and (again.search(QUERIES, k)[1] == before[1]).all()

    # k larger than the collection: padded with -1 / -inf
    small = build_index(kind, DIM, IDS[:5], VECTORS[:5], **params)
    s, i = small.search(QUERIES[:2], 8)
    assert i.shape == (2, 8) and (i[:, 5:] == -1).all() and np.isneginf(s[:, 5:]).all()
    assert set(i[0, :5]) == set(IDS[:5])

    # empty index
    empty = make_index(kind, DIM, **params)
    s, i = empty.search(QUERIES[:3], 4)
    assert (i == -1).all() and len(empty) == 0

    delete_index(path)
    assert not path.exists()


# ------------------------------------------------------------------ exactness where recall is 1.0

EXACT_CASES = [
    ("flat", {"storage": "pq4", "rerank_min": 600}),  # re-ranks every candidate exactly
    pytest.param("hnsw", {"M": 16, "ef_construction": 200, "ef_search": 600}, marks=ann),
    ("hnsw", {"M": 16, "ef_construction": 200, "ef_search": 600, "backend": "faiss"}),
    pytest.param("annoy", {"n_trees": 10, "search_k": 10**6}, marks=ann),
    ("ivf", {"nlist": 8, "nprobe": 8, "storage": "float32"}),
    ("sharded", {"shard_size": 64}),
    pytest.param("sharded", {"shards": 4, "inner": "hnsw", "inner_params": {"ef_search": 600}}, marks=ann),
    ("auto", {}),
    pytest.param("milvus", {"index_type": "FLAT"}, marks=milvus),
    pytest.param("milvus", {"index_type": "IVF_FLAT", "nlist": 8, "nprobe": 8}, marks=milvus),
    pytest.param("milvus", {"index_type": "HNSW", "M": 16, "ef_construction": 200, "ef": 600}, marks=milvus_hnsw),
]


@pytest.mark.parametrize(
    "kind,params", EXACT_CASES, ids=[getattr(c, "values", c)[0] + str(i) for i, c in enumerate(EXACT_CASES)]
)
def test_identical_to_flat_when_recall_is_one(kind, params):
    n = 500
    x, ids = VECTORS[:n], IDS[:n]
    flat = build_index("flat", DIM, ids, x)
    other = build_index(kind, DIM, ids, x, **params)
    for k in (1, 10, 50):
        fs, fi = flat.search(QUERIES, k)
        os_, oi = other.search(QUERIES, k)
        assert (oi == fi).all(), f"{kind}: ids or order differ from flat at k={k}"
        assert np.allclose(os_, fs, atol=1e-4)


@pytest.mark.parametrize("backend", [pytest.param("hnswlib", marks=ann), "faiss"])
def test_hnsw_raises_ef_for_large_k(backend):
    x = clustered(3000, seed=4)
    ids = np.arange(3000)
    q = clustered(20, seed=5)
    index = build_index("hnsw", DIM, ids, x, M=8, ef_construction=40, ef_search=16, backend=backend)
    k = 500
    assert index.ef_for(k) >= k
    _, found = index.search(q, k)
    _, truth = exact(x, ids, q, k)
    assert recall(found, truth) >= 0.97
    index.config.ef_k_factor = 1.0  # the beam exactly k wide is what the study's efSearch 16 could not give
    assert index.ef_for(k) == k


@ann
def test_hnsw_reuses_deleted_slots_and_survives_heavy_deletion(tmp_path):
    x = clustered(600, seed=6)
    index = build_index("hnsw", DIM, np.arange(600), x, M=8)
    index.remove(np.arange(0, 590))
    assert len(index) == 10
    s, i = index.search(x[:3], 20)
    assert set(i[0][i[0] >= 0]) <= set(range(590, 600)) and (i[:, 10:] == -1).all()
    index.add(np.arange(1000, 1300), x[:300])  # reuses freed slots: the graph does not grow
    assert len(index) == 310 and index.params()["deleted"] == 290
    index.save(tmp_path / "h")
    back = load_index("hnsw", tmp_path / "h")
    assert len(back) == 310
    assert back.search(x[:1], 1)[1][0, 0] == 1000


@ann
def test_annoy_ids_are_dense_and_mapped(tmp_path):
    big = np.array([5, 10**12, 77], np.int64)  # the study's max(id)+1 trap: annoy must never see these
    index = build_index("annoy", DIM, big, VECTORS[:3], n_trees=4)
    index.save(tmp_path / "a")
    size = index_size(tmp_path / "a")
    assert size < 200_000, "annoy items must be dense positions, not the caller's ids"
    back = load_index("annoy", tmp_path / "a", mmap=True)
    s, i = back.search(VECTORS[:3], 1)
    assert i[:, 0].tolist() == big.tolist()
    assert np.allclose(s[:, 0], 1.0, atol=1e-5)  # cos = 1 - d^2/2 from annoy's angular distance


def test_sharded_merges_like_one_index():
    sh = build_index("sharded", DIM, IDS, VECTORS, shard_size=16)
    assert sh.params()["n_shards"] == N // 16 + (N % 16 > 0)
    flat = build_index("flat", DIM, IDS, VECTORS)
    assert (sh.search(QUERIES, 20)[1] == flat.search(QUERIES, 20)[1]).all()
    sh.remove(IDS[:40])
    sh.add(IDS[:40], VECTORS[:40])  # goes to the last shard(s)
    assert len(sh) == N
    assert (sh.search(QUERIES, 20)[1] == flat.search(QUERIES, 20)[1]).all()


def test_auto_measures_and_records_its_choice(tmp_path):
    x = clustered(3000, seed=8)
    ids = np.arange(3000)
    q = clustered(64, seed=9)
    auto = build_index("auto", DIM, ids, x, queries=q, exact_max=500, sample=64, target_recall=0.95)
    p = auto.params()
    json.dumps(p)
    chosen = p["chosen"]
    assert chosen["kind"] in ("flat", "hnsw") and chosen["recall"] >= 0.95
    assert p["measured_recall"] == chosen["recall"]
    assert {c["kind"] for c in chosen["candidates"]} >= {"flat"}
    assert chosen["queries"] == "text queries"
    _, found = auto.search(q, 10)
    _, truth = exact(x, ids, q, 10)
    assert recall(found, truth) >= 0.9
    auto.save(tmp_path / "auto")
    back = load_index("auto", tmp_path / "auto", mmap=True)
    assert back.params() == p and (back.search(q, 10)[1] == found).all()
    # small collections are exact; growing past exact_max by adds triggers the measurement
    # and the query source (a function, as the library passes) is called only when it measures
    calls = []

    def source():
        calls.append(1)
        return q

    small = build_index("auto", DIM, ids[:100], x[:100], queries=source, exact_max=500)
    assert small.params()["chosen"]["kind"] == "flat" and small.params()["measured_recall"] == 1.0
    assert calls == []
    small.add(ids[100:1200], x[100:1200])
    assert small.params()["chosen"]["n"] == 1200 and len(small) == 1200
    assert calls == [1] and small.params()["chosen"]["queries"] == "text queries"
    # without queries it says that it used random directions
    proxy = build_index("auto", DIM, ids[:1200], x[:1200], exact_max=500, sample=32)
    assert proxy.params()["chosen"]["queries"].startswith("random directions")


@ann
def test_registry_and_configs():
    assert set(kinds()) == {"flat", "hnsw", "annoy", "ivf", "sharded", "auto", "milvus"}
    assert make_config("hnsw", M=8).M == 8
    assert make_config("ivf", storage="sq8").storage == "int8"
    with pytest.raises(PixqueryError, match="no parameter"):
        make_config("hnsw", nprobe=3)
    with pytest.raises(PixqueryError, match="storage"):
        make_config("flat", storage="float8")
    with pytest.raises(PixqueryError, match="unknown index kind"):
        make_index("lsh", DIM)
    with pytest.raises(ValueError):
        build_index("flat", DIM, [-1], VECTORS[:1])
    with pytest.raises(ValueError):
        build_index("flat", DIM, [1, 2], VECTORS[:3])


def test_loads_a_bare_faiss_file_of_pixquery_0_1(tmp_path):
    import faiss

    idx = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
    idx.add_with_ids(VECTORS[:100], IDS[:100])
    faiss.write_index(idx, str(tmp_path / "old.idx"))
    old = load_index("flat", tmp_path / "old.idx")
    assert len(old) == 100 and old.search(VECTORS[:1], 1)[1][0, 0] == IDS[0]
    old.save(tmp_path / "old.idx")  # re-saved in the folder format at the same path
    assert (tmp_path / "old.idx").is_dir() and len(open_index(tmp_path / "old.idx")) == 100


@ann
def test_load_of_missing_or_foreign_paths_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_index("hnsw", tmp_path / "nothing")
    (tmp_path / "dir").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_index("flat", tmp_path / "dir")
    build_index("flat", DIM, IDS[:10], VECTORS[:10]).save(tmp_path / "f")
    with pytest.raises(ValueError, match="not 'hnsw'"):
        load_index("hnsw", tmp_path / "f")


def test_garbage_of_crashed_saves_is_collected(tmp_path):
    path = tmp_path / "x"
    index = build_index("flat", DIM, IDS, VECTORS)
    index.save(path)
    (path / ".manifest.json.abcd1234.tmp").write_bytes(b"torn")
    (path / "deadbeef.index.faiss").write_bytes(b"old part")
    assert len(open_index(path)) == N  # junk does not disturb loading
    index.save(path)
    assert {p.name for p in path.iterdir()} == {p.relative_to(path).parts[0] for p in index_files(path)}


# ------------------------------------------------------------------ kill -9 during a save

SAVER = textwrap.dedent(
    """
    import sys, numpy as np
    from pixquery.indexes import build_index
    kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    params = {"n_trees": 2} if kind == "annoy" else {"M": 4, "ef_construction": 8} if kind == "hnsw" else {}
    index = build_index(kind, 64, np.arange(n), x, **params)
    version = 0
    print("ready", flush=True)
    while True:  # each save holds one more vector than the last
        version += 1
        index.add(np.array([n + version]), x[version % n][None])
        index.save(path)
    """
)


@pytest.mark.parametrize(
    "kind,n", [("flat", 150_000), pytest.param("hnsw", 20_000, marks=ann), pytest.param("annoy", 40_000, marks=ann)]
)
def test_kill_9_during_save_leaves_a_loadable_index(kind, n, tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    path = tmp_path / "index.idx"
    rng = np.random.default_rng(1)
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, str(script), kind, str(path), str(n)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            if attempt == 0:
                while not (path / "manifest.json").exists():  # the first save must land once
                    time.sleep(0.01)
            time.sleep(float(rng.uniform(0.05, 0.8)))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        index = load_index(kind, path)
        assert n < len(index) <= n + 10_000
        _, i = index.search(np.ones((1, 64), np.float32) / 8, 3)
        assert (i >= 0).all()


def test_hnsw_on_faiss_keeps_tombstones_and_survives_heavy_deletion(tmp_path):
    x = clustered(600, seed=6)
    index = build_index("hnsw", DIM, np.arange(600), x, M=8, backend="faiss")
    index.remove(np.arange(0, 590))
    assert len(index) == 10 and index.params()["deleted"] == 590
    s, i = index.search(x[:3], 20)  # most of the graph is tombstones: the beam widens to find all 10
    assert set(i[0][:10]) == set(range(590, 600)) and (i[:, 10:] == -1).all() and np.isneginf(s[:, 10:]).all()
    index.add(np.arange(1000, 1300), x[:300])  # faiss cannot reuse the slots: they stay tombstones
    assert len(index) == 310 and index.params()["deleted"] == 590
    index.save(tmp_path / "h")
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert manifest["kind"] == "hnsw" and manifest["params"]["backend"] == "faiss"  # loading picks it
    back = load_index("hnsw", tmp_path / "h")
    assert len(back) == 310 and back.params() == index.params()
    assert back.search(x[:1], 1)[1][0, 0] == 1000


# ------------------------------------------------------------------ a plain install (no `ann` extra)


def plain_install_env(tmp_path) -> dict:
    """Environment of a subprocess where `import hnswlib` and `import annoy` fail, as on a plain
    `pip install pixquery` (they are the optional `ann` extra): stub packages first on the path."""
    stubs = tmp_path / "plain-install"
    for name in ("hnswlib", "annoy"):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r} (plain install)", name={name!r})\n'
        )
    path = [str(stubs)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


PLAIN_AUTO = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from test_indexes import DIM, clustered, exact, recall
    from pixquery.errors import PixqueryError
    from pixquery.indexes import build_index, open_index
    for name in ("hnswlib", "annoy"):
        try:
            __import__(name)
            sys.exit(f"{name} is importable: the plain install was not simulated")
        except ImportError:
            pass
    n = 9000  # past auto's hnsw threshold (2 * exact_max = 8192)
    x, ids, q = clustered(n, seed=11), np.arange(n) * 2 + 1, clustered(64, seed=12)
    auto = build_index("auto", DIM, ids, x, queries=q, sample=64, target_recall=0.95)
    chosen = auto.params()["chosen"]
    hnsw = [c for c in chosen["candidates"] if c["kind"] == "hnsw"]
    _, found = auto.search(q, 10)
    _, truth = build_index("flat", DIM, ids, x).search(q, 10)
    auto.save(sys.argv[1])
    back = open_index(sys.argv[1])
    # the hnsw candidate itself, on faiss, saved and loaded without hnswlib
    graph = build_index("hnsw", DIM, ids, x, backend="faiss")
    graph.save(sys.argv[2])
    g_found = open_index(sys.argv[2]).search(q, 10)[1]
    try:
        build_index("hnsw", DIM, ids[:10], x[:10])
        explicit = "built"
    except PixqueryError as e:
        explicit = str(e)
    print(json.dumps({"chosen": chosen["kind"], "hnsw": hnsw, "recall": recall(found, truth),
                      "loaded_same": bool((back.search(q, 10)[1] == found).all()),
                      "graph_recall": recall(g_found, truth), "explicit": explicit}))
    """
)


def test_auto_past_its_hnsw_threshold_on_a_plain_install(tmp_path):
    script = tmp_path / "plain_auto.py"
    script.write_text(PLAIN_AUTO)
    env = plain_install_env(tmp_path)
    env["PYTHONPATH"] += os.pathsep + os.path.dirname(__file__)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "auto"), str(tmp_path / "graph")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # auto measured an hnsw it could import (faiss's), and its choice searches like flat
    assert len(out["hnsw"]) == 1 and out["hnsw"][0]["params"]["backend"] == "faiss", out
    assert out["hnsw"][0]["recall"] >= 0.9
    assert out["recall"] >= 0.9 and out["loaded_same"]
    assert out["graph_recall"] >= 0.95
    # asking for hnsw by name still needs hnswlib, and says how to get it
    assert "pip install 'pixquery[ann]'" in out["explicit"] and "hnswlib" in out["explicit"]


def test_index_hnsw_command_on_a_plain_install_says_how_to_install(tmp_path, tiny_model):
    from clirun import pixquery
    from photos import make_photos

    make_photos(tmp_path / "photos", 2)
    env = plain_install_env(tmp_path)
    for kind, library in (("hnsw", "hnswlib"), ("annoy", "annoy")):
        r = pixquery(
            "index",
            tmp_path / "photos",
            "-L",
            tmp_path / f"lib-{kind}",
            "-m",
            tiny_model,
            "--index",
            kind,
            env={"PYTHONPATH": env["PYTHONPATH"]},
        )
        assert r.returncode == 2, (r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr  # before any photo is embedded
        assert library in lines[0] and "pip install 'pixquery[ann]'" in lines[0]


# ------------------------------------------------------------------ Milvus served over gRPC


@pytest.fixture
def milvus_server(tmp_path):
    """milvus-lite serving on a loopback port as a separate process (tests/milvus_server.py): the
    client talks gRPC to it as it would to a Milvus cluster."""
    from milvus_server import MilvusServer

    with MilvusServer(tmp_path / "served") as server:
        yield server.uri


@milvus
@pytest.mark.parametrize(
    "params",
    [
        {"index_type": "FLAT"},
        {"index_type": "IVF_FLAT", "nlist": 8, "nprobe": 8},
        pytest.param({"index_type": "HNSW", "M": 16, "ef_construction": 200, "ef": 600}, marks=milvus_hnsw),
    ],
    ids=lambda p: p["index_type"],
)
def test_milvus_contract_against_a_server_process(milvus_server, params, tmp_path):
    n, k = 500, 10
    x, ids = VECTORS[:n], IDS[:n]
    flat = build_index("flat", DIM, ids, x)
    index = build_index("milvus", DIM, ids, x, uri=milvus_server, **params)
    assert len(index) == n and index.params()["uri"] == milvus_server
    name = index.params()["collection"]
    assert name.startswith("pixquery_")
    for kk in (1, 10, 50):
        fs, fi = flat.search(QUERIES, kk)
        ms, mi = index.search(QUERIES, kk)
        assert (mi == fi).all(), f"ids or order differ from flat at k={kk}"
        assert np.allclose(ms, fs, atol=1e-4)

    # remove (absent ids ignored), upsert, batches over the 2,000-row limit of one call
    gone = ids[::10]
    index.remove(gone)
    index.remove(np.array([10**9], np.int64))
    flat.remove(gone)
    assert len(index) == n - len(gone)
    assert (index.search(QUERIES, k)[1] == flat.search(QUERIES, k)[1]).all()
    index.add(gone, x[::10])
    index.add(ids[:3], x[:3])  # present: replaced, not duplicated
    assert len(index) == n
    big_ids = np.arange(10**6, 10**6 + 4500, dtype=np.int64)
    index.add(big_ids, clustered(4500, seed=7))
    assert len(index) == n + 4500
    index.remove(big_ids)
    assert len(index) == n

    # save writes a manifest naming uri and collection; load attaches to the same collection
    path = tmp_path / "index.idx"
    index.save(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "milvus" and manifest["state"]["collection"] == name
    assert index_files(path) == [path / "manifest.json"]
    before = index.search(QUERIES, k)
    again = open_index(path)
    assert len(again) == n and again.params() == index.params()
    after = again.search(QUERIES, k)
    # The same collection answers, with the same score for every hit both answers hold. milvus-lite 3
    # answers from its brute-force path or its IVF path, whichever its background build has reached
    # (seen twice in CI: a hit near the k-th missing from one of two answers), so the sets must
    # overlap, not be equal; an index attached to another or an empty collection shares nothing.
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(after[1], before[1])])
    assert overlap > 0.9, overlap
    for a_ids, a_scores, b_ids, b_scores in zip(after[1], after[0], before[1], before[0]):
        scores = dict(zip(b_ids.tolist(), b_scores.tolist()))
        for i, score in zip(a_ids.tolist(), a_scores.tolist()):
            if i in scores:
                assert abs(scores[i] - score) < 1e-5
    again.remove(ids[:1])  # shared: the saving index sees it
    assert len(index) == n - 1

    # another index on the same server is another collection
    other = make_index("milvus", DIM, uri=milvus_server, **params)
    assert len(other) == 0 and (other.search(QUERIES[:2], 3)[1] == -1).all()


@milvus
def test_a_loaded_milvus_index_outlives_a_server_restart(tmp_path):
    """A long-lived reader (`pixquery serve`) outlives a Milvus restart: while the server is down a
    call fails within about `timeout` with one IndexStoreError naming it; once it is back (the same
    data, the same port) the same index object answers as before (it reconnects, and loads the
    collection again where the restarted server brought it back released, as milvus-lite 3 does)."""
    from milvus_server import MilvusServer
    from pixquery.errors import IndexStoreError

    timeout = 2
    server = MilvusServer(tmp_path / "served").start()
    try:
        index = build_index("milvus", DIM, IDS[:300], VECTORS[:300], uri=server.uri, index_type="FLAT", timeout=timeout)
        before = index.search(QUERIES[:5], 10)
        server.kill()
        for _ in range(2):  # the first call after the kill, and one after a failed reconnect
            t0 = time.monotonic()
            with pytest.raises(IndexStoreError) as e:
                index.search(QUERIES[:5], 10)
            assert server.uri in str(e.value) and "\n" not in str(e.value)
            assert time.monotonic() - t0 < 2 * timeout + 1, "a dead server must cost about one timeout"
        server.start()
        after = index.search(QUERIES[:5], 10)
        assert (after[1] == before[1]).all() and np.allclose(after[0], before[0], atol=1e-5)
        assert len(index) == 300
    finally:
        server.stop()


@milvus
@pytest.mark.parametrize("where", ["embedded", "server"])
def test_milvus_index_type_the_engine_lacks_is_one_clear_error(where, request):
    """milvus-lite 2.5 has no HNSW (nor IVF_SQ8 / IVF_PQ / DISKANN): asking for one is a
    PixqueryError naming the index type and the engine, and leaves no collection behind."""
    from pixquery.indexes.milvus import INDEX_TYPES

    lacking = [t for t in INDEX_TYPES if milvus_lacks(t)]
    if not lacking:
        from importlib.metadata import version

        pytest.skip(
            f"milvus-lite {version('milvus-lite')} accepts every index type pixquery offers "
            f"({', '.join(INDEX_TYPES)}): none to refuse"
        )
    t = lacking[0]
    uri = request.getfixturevalue("milvus_server") if where == "server" else ""
    with pytest.raises(PixqueryError) as e:
        make_index("milvus", DIM, uri=uri, collection="refused", index_type=t)
    message = str(e.value)
    assert t in message and "milvus" in message.lower() and "\n" not in message
    assert ("embedded milvus-lite" in message) if where == "embedded" else (uri in message)
    if where == "server":
        from pymilvus import MilvusClient

        assert "refused" not in MilvusClient(uri=uri).list_collections()
        index = make_index("milvus", DIM, uri=uri, collection="refused", index_type="FLAT")  # the name is free
        assert len(index) == 0


@milvus
def test_milvus_lite_defaults_to_flat_and_warns_of_the_index_it_ignores():
    """milvus-lite never builds the IVF index asked for and answers past 100,000 rows from an
    interim index at recall ~0.3 (bench/results/indexes-milvus-1000000.md): exact FLAT is its
    default, and asking it for IVF_FLAT / AUTOINDEX says so."""
    import warnings

    from pixquery.indexes import make_config

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_config("milvus").index_type == "FLAT"
        assert make_config("milvus", uri="/tmp/mine.db").index_type == "FLAT"
        assert make_config("milvus", uri="http://milvus:19530").index_type == "IVF_FLAT"
        make_config("milvus", uri="http://milvus:19530", index_type="IVF_FLAT")  # a server builds it
    for index_type in ("IVF_FLAT", "autoindex"):
        with pytest.warns(UserWarning, match="milvus-lite ignores index_type"):
            make_config("milvus", index_type=index_type)


# ------------------------------------------------------------------ a real Milvus standalone server

milvus_standalone = pytest.mark.milvus_standalone


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    from milvus_server import MilvusStandalone

    with MilvusStandalone(tmp_path_factory.mktemp("milvus-standalone")) as server:
        yield server


@milvus_standalone
@pytest.mark.parametrize(
    "params, floor",
    [
        ({"index_type": "FLAT"}, 1.0),
        ({"index_type": "IVF_FLAT", "nlist": 16, "nprobe": 16}, 1.0),
        ({"index_type": "HNSW", "M": 16, "ef_construction": 200, "ef": 200}, 0.98),
        ({"index_type": "IVF_SQ8", "nlist": 16, "nprobe": 16}, 0.9),
        ({"index_type": "IVF_PQ", "nlist": 16, "nprobe": 16, "M": 8}, 0.5),
        # DISKANN is accepted but never built by this standalone (indexed_rows stays 0 after 300 s, with
        # the query nodes' enableDisk on): not tested, see docs/indexes.md.
    ],
    ids=lambda p: p["index_type"] if isinstance(p, dict) else None,
)
def test_milvus_standalone_builds_each_index_type_and_keeps_the_contract(standalone, params, floor):
    """Every index type pixquery offers, really built by a Milvus server (the milvus-lite engines
    never build one: every search there is exact or the interim index): the contract holds, and the
    answers of the built index reach `floor` recall@10 against exact search."""
    n = 3 * N  # a sealed segment is indexed from 1,024 rows on
    x = np.concatenate([VECTORS, clustered(2 * N, seed=5)])
    ids = np.arange(n, dtype=np.int64) * 2 + 1
    exact = build_index("flat", DIM, ids, x)
    index = build_index("milvus", DIM, ids, x, uri=standalone.uri, timeout=30, **params)
    try:
        index.wait_until_indexed(timeout=300)
        described = index._client.describe_index(index.config.collection, "vector")
        assert described["index_type"] == params["index_type"] and int(described["indexed_rows"]) == n
        assert len(index) == n
        _, truth = exact.search(QUERIES, 10)
        scores, found = index.search(QUERIES, 10)
        assert recall(found, truth) >= floor
        assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
        # upsert replaces, remove deletes, filtered search stays inside the filter
        index.add(ids[:5], -x[:5], fields={"media": np.full(5, 2, np.int8)})
        index.remove(ids[5:10])
        assert len(index) == n - 5
        _, hits = index.search(-x[:5], 1)
        assert hits[:, 0].tolist() == ids[:5].tolist()
        _, only = index.search(QUERIES[:3], 5, filter="media == 2")
        assert set(only[only >= 0].tolist()) <= set(ids[:5].tolist())
    finally:
        index.drop()
    assert index.config.collection not in standalone.collections()
