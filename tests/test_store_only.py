"""Store-only libraries (`pixquery import DIR --store-only --index milvus`): the shards of
`pixquery embed` loaded straight into a Milvus collection, no catalog row per image.

The shards are written by the real writer (shards.embed_to_shards) with the real decode and
encode functions of the Ray executor called in this process instead of on a Ray cluster (Ray's
start-up alone is ~10 s here; test_ray_engine.py covers the cluster). Milvus is the real engine:
milvus-lite as a file in the library, and milvus-lite as a server process on a loopback port.
"""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from clirun import pixquery
from photos import make_photos

pytestmark = pytest.mark.milvus

QUERIES = ("a dog", "a red sports car", "sunset over the sea", "a bowl of soup")


def _in_process_stream(pending, info, **kw):
    """embed_stream's stand-in: the Ray executor's own decode and encode functions, run here."""
    import pyarrow as pa

    from pixquery.ingest.executors import ray as ray_exec

    enc = ray_exec._Encode(info.spec, info.precision, info.fingerprint, None)
    for batch in pending.to_batches(max_chunksize=4):
        yield enc(ray_exec._decode_batch(pa.Table.from_batches([batch]), info.preprocess_cfg, True))


@pytest.fixture(scope="module")
def shards(tmp_path_factory, tiny_model):
    """11 photos and one bad file embedded into 4 shards of 3, and the same shards imported the
    ordinary way (catalog rows, exact `flat` index) to compare search results with."""
    pytest.importorskip("pyarrow")
    from pixquery import Library
    from pixquery.ingest.shards import embed_to_shards, import_shards

    base = tmp_path_factory.mktemp("store")
    make_photos(base / "photos", 11, size=(64, 48))
    (base / "photos" / "bad.jpg").write_bytes(b"not a jpeg")
    rep = embed_to_shards(
        str(base / "photos"), str(base / "shards"), model=str(tiny_model), partition_size=3, stream=_in_process_stream
    )
    assert rep.written_partitions == 4 and rep.embedded == 11 and len(rep.failed) == 1
    with Library.open(base / "catalog") as lib:
        lib.catalog.set_setting("index", json.dumps({"kind": "flat", "params": {}}))
        assert import_shards(lib, str(base / "shards")).imported == 11
    return base


def _expected_ids(base) -> list[int]:
    from pixquery.ingest.shards import iter_shard_rows
    from pixquery.ingest.store_only import vector_id

    out = []
    for pid, t in iter_shard_rows(str(base / "shards"), ["error"]):
        ok = np.asarray([i for i, e in enumerate(t.column("error").to_pylist()) if e is None], np.int64)
        out += vector_id(1, pid, ok).tolist()
    return sorted(out)


def _same_as_flat(base, lib_dir) -> None:
    """Text, image-file and vector searches, with and without a threshold: the same paths in the
    same order as the catalog library's exact index, and the same scores."""
    from pixquery import Library

    with Library.open(lib_dir) as so, Library.open(base / "catalog") as flat:
        for q in QUERIES:
            a, b = so.search(q, k=5), flat.search(q, k=5)
            assert [r.path for r in a] == [r.path for r in b], q
            assert np.allclose([r.score for r in a], [r.score for r in b], atol=1e-5)
            assert a[0].image_id is None and a[0].width == 64 and a[0].height == 48
            cut = (b[1].distance + b[2].distance) / 2
            ta, tb = so.search(q, k=5, threshold=cut), flat.search(q, k=5, threshold=cut)
            assert [r.path for r in ta] == [r.path for r in tb] and len(ta) == 2 and ta.dropped == tb.dropped
        img = base / "photos" / "photo_0003.jpg"
        a, b = so.search(image=img, k=11), flat.search(image=img, k=11)
        assert [r.path for r in a] == [r.path for r in b] and a[0].path == str(img) and len(a) == 11
        vec = flat.embed_image(img)
        assert [r.path for r in so.search(vector=vec, k=3)] == [r.path for r in flat.search(vector=vec, k=3)]
        assert so.catalog.count_images() == 0 and so.catalog.indexes() == []  # no catalog row per image
        assert all(so.catalog.count_embeddings(m.id) == 0 for m in so.catalog.models())


def _one_line_error(r, *words) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [
        line
        for line in r.stderr.splitlines()
        if line.strip()
        and "pkg_resources" not in line
        and "UserWarning" not in line
        and "random-weight test model" not in line
    ]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def file_store(shards):
    """A store-only library whose collection is a milvus-lite file in the library folder."""
    r = pixquery(
        "import", shards / "shards", "-L", shards / "so", "--store-only", "--param", "index_type=FLAT", "--json"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return shards / "so", json.loads(r.stdout)


def test_store_only_import_into_a_milvus_lite_file(shards, file_store):
    lib_dir, rep = file_store
    assert (rep["shards"], rep["vectors"], rep["total"], rep["skipped_shards"]) == (4, 11, 11, 0)
    assert [f["path"] for f in rep["failed"]] == [str(shards / "photos" / "bad.jpg")]
    assert rep["collection"] and rep["uri"].endswith("store.milvus.db")
    _same_as_flat(shards, lib_dir)
    # The CLI search prints what the catalog library prints.
    a = pixquery("search", "a dog", "-L", lib_dir, "-k", "4")
    b = pixquery("search", "a dog", "-L", shards / "catalog", "-k", "4")
    assert a.returncode == 0, a.stderr
    assert [line.split("\t")[3] for line in a.stdout.splitlines()] == [
        line.split("\t")[3] for line in b.stdout.splitlines()
    ]
    # A re-run skips every shard; the collection is unchanged.
    again = pixquery("import", shards / "shards", "-L", lib_dir, "--store-only", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    rep2 = json.loads(again.stdout)
    assert (rep2["shards"], rep2["skipped_shards"], rep2["vectors"], rep2["total"], rep2["failed_before"]) == (
        0,
        4,
        0,
        11,
        1,
    )
    info = json.loads(pixquery("info", "-L", lib_dir, "--json").stdout)
    assert info["images"] == 0 and info["store_only"]["vectors"] == 11 and info["store_only"]["shards"] == 4


def test_what_a_store_only_library_cannot_do(shards, file_store, tiny_rn50):
    lib_dir, _ = file_store
    s = shards / "shards"
    _one_line_error(
        pixquery("index", shards / "photos", "-L", lib_dir),
        "is store-only",
        "no file versions to rescan",
        "pixquery embed",
    )
    _one_line_error(pixquery("index", "-L", lib_dir, "--regions"), "is store-only", "regions or videos")
    _one_line_error(
        pixquery("reindex", "-L", lib_dir, "--index", "flat"), "is store-only", "live only in the collection"
    )
    _one_line_error(pixquery("import", s, "-L", lib_dir), "is store-only", "--store-only")
    _one_line_error(pixquery("search", "a dog", "-L", lib_dir, "-m", tiny_rn50), "is store-only", "-m ")
    _one_line_error(
        pixquery("import", s, "-L", lib_dir, "--store-only", "--param", "uri=http://127.0.0.1:9"),
        "leave out --param uri",
    )
    # Only into an empty library, only with a kind that stores paths, --param only with --store-only.
    _one_line_error(pixquery("import", s, "-L", shards / "catalog", "--store-only"), "11 images in its catalog")
    _one_line_error(pixquery("import", s, "-L", shards / "other", "--store-only", "--index", "flat"), "milvus")
    _one_line_error(pixquery("import", s, "-L", shards / "other", "--param", "nlist=4"), "go with --store-only")
    # No --image-id on the command line; the API and the server's ?image_id= are refused.
    from pixquery import Library
    from pixquery.errors import LibraryError

    with Library.open(lib_dir) as lib, pytest.raises(LibraryError, match="no image ids .* --image PATH"):
        lib.search(image_id=1)


def test_a_shard_the_collection_lost_is_loaded_again(shards, tmp_path):
    """The catalog says a shard is loaded but the collection lacks its vectors (a server restored
    from an older backup): the next import finds it by counting and loads it again."""
    from pixquery import Library
    from pixquery.ingest.store_only import _shard_range, close_store, import_store_only, open_store

    with Library.open(tmp_path / "lib") as lib:
        assert import_store_only(lib, str(shards / "shards"), params={"index_type": "FLAT"}).total == 11
        index = open_store(lib)
        lo, hi = _shard_range(1, 2)
        index.remove(np.arange(lo, lo + 3))
        assert len(index) == 8
        close_store(lib, index)
        rep = import_store_only(lib, str(shards / "shards"))
        assert (rep.reloaded_shards, rep.total, rep.skipped_shards) == (1, 11, 4)
        index = open_store(lib)
        assert index.ids().tolist() == _expected_ids(shards)
        close_store(lib, index)


def test_store_only_on_a_server_killed_mid_import_resumes(shards, tmp_path):
    """Into milvus-lite served on a port (gRPC, as a cluster): the import is killed (-9) after its
    second shard is in the collection but before the catalog records it; the re-run loads it again
    and the rest, and the collection holds exactly the shards' rows."""
    from milvus_server import MilvusServer
    from pixquery import Library
    from pixquery.ingest.store_only import close_store, open_store

    lib_dir = tmp_path / "lib"
    with MilvusServer(tmp_path / "served") as server:
        args = (
            "import",
            shards / "shards",
            "-L",
            lib_dir,
            "--store-only",
            "--index",
            "milvus",
            "--param",
            f"uri={server.uri}",
            "--param",
            "collection=photos",
            "--param",
            "index_type=FLAT",
            "--json",
        )
        killed = pixquery(*args, env={"PIXQUERY_FAILPOINT": "store_only/after_shard_load:2"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        with Library.open(lib_dir) as lib:
            assert [p for p in lib.catalog.loaded_shards(1)] == [0]  # the second is loaded, not recorded
            index = open_store(lib)
            assert len(index) == 5  # shard 0: bad.jpg (no vector) and 2 photos; shard 1: 3 photos
            close_store(lib, index)
        again = pixquery(*args[:7], "--json")  # the library remembers uri, collection and index type
        assert again.returncode == 0, again.stderr[-3000:]
        rep = json.loads(again.stdout)
        assert (rep["skipped_shards"], rep["shards"], rep["vectors"], rep["total"]) == (1, 3, 9, 11)
        assert rep["uri"] == server.uri and rep["collection"] == "photos"
        assert server.collections() == ["photos"]
        with Library.open(lib_dir) as lib:
            index = open_store(lib)
            assert index.ids().tolist() == _expected_ids(shards)
            close_store(lib, index)
        _same_as_flat(shards, lib_dir)
        a = pixquery("search", "a red sports car", "-L", lib_dir, "-k", "3", "--json")
        assert a.returncode == 0 and len(json.loads(a.stdout)["results"]) == 3, a.stderr
