"""A library whose index is a collection on a Milvus server (the real engine, milvus-lite's binary
run as a separate process): the catalog stays the truth and the collection follows it.

After every run, crashed or not, the collection holds exactly the ids the catalog maps, with the
stored vectors and the scalar fields filtered search needs; a rebuild leaves one collection, not
two. Crashes: the indexing process killed (kill -9) after its Milvus writes and before the catalog
commit, and during a full load; the Milvus server killed mid-index and restarted.
"""

from __future__ import annotations

import json
import signal
import sqlite3

import numpy as np
import pytest

from clirun import pixquery
from milvus_server import MilvusServer, MilvusStandalone
from photos import make_photos

pytestmark = pytest.mark.milvus


@pytest.fixture
def server(tmp_path):
    with MilvusServer(tmp_path / "milvus") as s:
        yield s


@pytest.fixture(params=["milvus-lite", pytest.param("standalone", marks=pytest.mark.milvus_standalone)])
def any_server(request, tmp_path):
    """milvus-lite's engine as a server process, and a real Milvus standalone server."""
    server_class = MilvusServer if request.param == "milvus-lite" else MilvusStandalone
    with server_class(tmp_path / request.param) as s:
        yield s


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("milvus-photos")
    make_photos(folder, 24, size=(192, 160))
    return folder


def milvus_params(server, **extra) -> list[str]:
    params = {"uri": server.uri, "index_type": "FLAT", "timeout": 5, **extra}
    return [a for k, v in params.items() for a in ("--param", f"{k}={v}")]


def active_index(lib) -> tuple[int, str, dict]:
    """(index id, collection, {ref: (image_id, detection_id)}) of the library's active index."""
    db = sqlite3.connect(lib / "catalog.sqlite")
    try:
        index_id, path = db.execute('SELECT id, path FROM "index" WHERE active = 1').fetchone()
        refs = {
            r: (i, d)
            for r, i, d in db.execute(
                "SELECT index_ref_id, image_id, detection_id FROM index_image WHERE index_id = ?", (index_id,)
            )
        }
    finally:
        db.close()
    manifest = json.loads((lib / path / "manifest.json").read_text())
    return index_id, manifest["params"]["collection"], refs


def collection_rows(server, name) -> dict[int, dict]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=server.uri, timeout=10)
    try:
        rows = client.query(
            name,
            filter="id >= 0",
            output_fields=["id", "vector", "media", "folder", "taken"],
            consistency_level="Strong",
            limit=16384,
        )
    finally:
        client.close()
    return {int(r["id"]): r for r in rows}


def check_collection_equals_catalog(lib, server, n_photos: int) -> str:
    """The collection holds exactly the catalog's refs, each with its stored vector; it is the
    only collection on the server. Returns its name."""
    _, name, refs = active_index(lib)
    assert len(refs) == n_photos
    rows = collection_rows(server, name)
    assert sorted(rows) == sorted(refs)
    db = sqlite3.connect(lib / "catalog.sqlite")
    try:
        for ref, (image_id, _) in refs.items():
            (blob,) = db.execute("SELECT vector FROM embedding WHERE image_id = ?", (image_id,)).fetchone()
            np.testing.assert_allclose(rows[ref]["vector"], np.frombuffer(blob, np.float32), atol=1e-6)
    finally:
        db.close()
    assert server.collections() == [name]  # a rebuild or a crashed build leaves nothing behind
    return name


def index(photos, lib, model, server, *extra, env=None, **params):
    paths = photos if isinstance(photos, list) else [photos]
    return pixquery(
        "index",
        *paths,
        "-L",
        lib,
        "-m",
        model,
        "--batch-size",
        "8",
        "--index",
        "milvus",
        *milvus_params(server, **params),
        *extra,
        env=env,
    )


def test_library_on_a_milvus_server_follows_the_catalog(photos, tmp_path, tiny_model, any_server):
    server = any_server
    lib, flat_lib = tmp_path / "lib", tmp_path / "flat"
    r = index(photos, lib, tiny_model, server)
    assert r.returncode == 0, r.stderr
    assert "loading index" in r.stderr  # the batched load has its own progress bar
    check_collection_equals_catalog(lib, server, 24)

    # the same answers as an exact index over the same stored vectors
    r = pixquery("index", photos, "-L", flat_lib, "-m", tiny_model, "--index", "flat")
    assert r.returncode == 0, r.stderr
    for query in ("a red sunset", "two dogs"):
        got = [
            json.loads(pixquery("search", query, "-L", d, "-k", "10", "--json").stdout)["results"]
            for d in (lib, flat_lib)
        ]
        assert [x["path"] for x in got[0]] == [x["path"] for x in got[1]]
        np.testing.assert_allclose([x["score"] for x in got[0]], [x["score"] for x in got[1]], atol=1e-5)

    # the scalar fields filtered search needs, from the catalog
    _, name, refs = active_index(lib)
    rows = collection_rows(server, name)
    db = sqlite3.connect(lib / "catalog.sqlite")
    (folder_id,) = db.execute("SELECT id FROM folder").fetchone()
    mtimes = dict(db.execute("SELECT id, mtime_ns FROM image"))
    db.close()
    for ref, (image_id, _) in refs.items():
        assert (rows[ref]["media"], rows[ref]["folder"], rows[ref]["taken"]) == (
            0,
            folder_id,
            mtimes[image_id] // 10**9,
        )

    # changes on disk: the collection follows (removed ids deleted, new ones added), same collection
    gone = sorted(photos.glob("*.jpg"))[:4]
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in gone:
        p.rename(moved / p.name)
    try:
        make_photos(photos, 3, size=(192, 160), start_seed=500, ext=".png")
        r = pixquery("index", "-L", lib, "--json")
        assert r.returncode == 0, r.stderr
        assert (json.loads(r.stdout)["index"]["added"], json.loads(r.stdout)["index"]["removed"]) == (3, 4)
        assert check_collection_equals_catalog(lib, server, 23) == name
    finally:
        for p in moved.iterdir():
            p.rename(photos / p.name)
        for p in photos.glob("*.png"):
            p.unlink()

    # another index type: a new collection, and the one it replaced is dropped
    r = pixquery(
        "reindex", "-L", lib, "--index", "milvus", *milvus_params(server, index_type="IVF_FLAT", nlist=4, nprobe=4)
    )
    assert r.returncode == 0, r.stderr
    assert check_collection_equals_catalog(lib, server, 23) != name


@pytest.fixture
def own_photos(photos, tmp_path):
    """A copy of the photos this test may move around."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(photos.glob("*.jpg")):
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


def move(paths, folder):
    folder.mkdir(exist_ok=True)
    for p in paths:
        p.rename(folder / p.name)


@pytest.mark.parametrize("failpoint", ["before_index_commit", "index_load_batch"])
def test_killed_between_milvus_write_and_catalog_commit(own_photos, tmp_path, tiny_model, server, failpoint):
    """kill -9 after the collection changed and before the catalog says so; then the disk changes
    again before the next run, so that run's own writes do not simply redo the crashed ones: the
    collection must be made equal to the catalog (ids it gained removed, ids it lost added back)."""
    lib, aside = tmp_path / "lib", tmp_path / "aside"
    photos = sorted(own_photos.glob("*.jpg"))
    move(photos[14:], aside)
    r = index(own_photos, lib, tiny_model, server)
    assert r.returncode == 0, r.stderr
    before = check_collection_equals_catalog(lib, server, 14)
    # the crashed run: 4 photos left (deleted from the collection), 10 arrived (added to it)
    move(photos[:4], tmp_path / "gone")
    move([aside / p.name for p in photos[14:]], own_photos)
    r = index(own_photos, lib, tiny_model, server, env={"PIXQUERY_FAILPOINT": failpoint})
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    _, name, refs = active_index(lib)
    assert name == before and len(refs) == 14  # the catalog still says what it said
    assert sorted(collection_rows(server, name)) != sorted(refs)  # and the collection moved on
    r = pixquery("search", "x", "-L", lib, "-k", "5", "--json")  # still searchable meanwhile
    assert r.returncode == 0, r.stderr
    # before the next run the 4 come back (the collection lost them) and 6 of the 10 go again
    # (the collection holds ids the next run will not give out)
    move([tmp_path / "gone" / p.name for p in photos[:4]], own_photos)
    move([own_photos / p.name for p in photos[18:]], aside)
    r = index(own_photos, lib, tiny_model, server, "--json")
    assert r.returncode == 0, r.stderr
    assert check_collection_equals_catalog(lib, server, 18) == before


def test_killed_during_a_full_load_leaves_no_orphan(photos, tmp_path, tiny_model, server):
    lib = tmp_path / "lib"
    r = index(photos, lib, tiny_model, server)
    assert r.returncode == 0, r.stderr
    old = check_collection_equals_catalog(lib, server, 24)
    # a rebuild into a new collection, killed after its first batch: the old one stays active
    r = pixquery(
        "reindex",
        "-L",
        lib,
        "--index",
        "milvus",
        *milvus_params(server, index_type="IVF_FLAT", nlist=4),
        env={"PIXQUERY_FAILPOINT": "index_load_batch"},
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert len(server.collections()) == 2
    r = pixquery("search", "x", "-L", lib, "-k", "30", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["results"]) == 24, r.stderr
    # the next run drops the half-built collection and keeps the active one whole
    r = pixquery("index", "-L", lib, "--json")
    assert r.returncode == 0, r.stderr
    assert check_collection_equals_catalog(lib, server, 24) == old


def test_milvus_server_killed_mid_index_and_restarted(own_photos, tmp_path, tiny_model, server, monkeypatch):
    """The server dies between two load batches: the run fails with one clear error (nothing of the
    catalog lost); the server restarts on its data; photos change; the re-run makes the collection
    equal to the catalog."""
    from pixquery import Library
    from pixquery.api import IndexProgress
    from pixquery.errors import IndexStoreError
    from pixquery.ingest import sync

    lib_dir, aside = tmp_path / "lib", tmp_path / "aside"
    photos = sorted(own_photos.glob("*.jpg"))
    move(photos[6:], aside)
    with Library.open(lib_dir, model=str(tiny_model)) as lib:
        lib.index([own_photos], index="milvus", index_params={"uri": server.uri, "index_type": "FLAT", "timeout": 3})
    name = check_collection_equals_catalog(lib_dir, server, 6)

    class KillServer(IndexProgress):
        def loading(self, done, total):
            if done >= 6:  # two batches of 3 written, more to come
                server.kill()

    monkeypatch.setattr(sync, "LOAD_BATCH", 3)
    move([aside / p.name for p in photos[6:]], own_photos)
    with Library.open(lib_dir) as lib, pytest.raises(IndexStoreError, match="Milvus at http://127.0.0.1"):
        lib.index(progress=KillServer())
    server.start()
    move([own_photos / p.name for p in photos[:2] + photos[10:]], aside)
    with Library.open(lib_dir) as lib:
        report = lib.index()
    assert report.index.total == 8
    assert check_collection_equals_catalog(lib_dir, server, 8) == name

    # the CLI says the same in one line and exit 2 when the server is gone
    server.kill()
    r = pixquery("search", "x", "-L", lib_dir, "-k", "3")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "Milvus at http://127.0.0.1" in r.stderr
