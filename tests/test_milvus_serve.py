"""`pixquery serve` over a Milvus-backed library (issue 13, "Serving"), against the real engine.

Milvus runs as its own process on loopback (milvus-lite's Milvus engine, tests/milvus_server.py),
the library is made by the real `pixquery index` command, and every `pixquery serve` is a real
server process, so everything crosses a process boundary as it would across machines:

* two servers over one library answer alike, and both follow an index run made meanwhile by a
  third process (new photos found, deleted ones never returned) without a restart: the query side
  keeps no state of its own;
* Milvus killed under a running server: searches answer 503 naming Milvus within about the
  index's `timeout`, and the same server answers again once Milvus is back;
* real photos (../shared/data): flat and Milvus (FLAT, and IVF_FLAT with nprobe = nlist) give the
  same top-10 for the same text and image queries.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from clirun import pixquery
from conftest import shared_data
from photos import make_photos
from test_server_support import running_server

pytestmark = [pytest.mark.milvus, pytest.mark.timeout(300)]

QUERIES = ["a dog on a beach", "a red sports car", "mountains at sunset", "a bowl of soup", "a ship at sea"]
STORE_TIMEOUT = 3  # seconds: the library's Milvus `timeout` in the outage test


@pytest.fixture
def milvus(tmp_path):
    from milvus_server import MilvusServer

    server = MilvusServer(tmp_path / "milvus").start()
    yield server
    server.stop()


def _index(photos: Path, lib: Path, model: Path, *args) -> None:
    r = pixquery("index", photos, "-L", lib, "-m", model, *args, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr


def _milvus_library(root: Path, model: Path, uri: str, n: int, *params: str) -> tuple[Path, Path]:
    photos, lib = root / "photos", root / "library"
    make_photos(photos, n)
    _index(
        photos,
        lib,
        model,
        "--index",
        "milvus",
        "--param",
        f"uri={uri}",
        "--param",
        "index_type=FLAT",
        *[a for p in params for a in ("--param", p)],
    )
    return lib, photos


def _hits(client: httpx.Client, q: str, k: int) -> list[tuple[int, str, float]]:
    r = client.get("/api/search", params={"q": q, "k": k})
    assert r.status_code == 200, r.text
    return [(h["image_id"], h["path"], h["score"]) for h in r.json()["results"]]


def _same_hits(a: list, b: list) -> None:
    assert [(i, p) for i, p, _ in a] == [(i, p) for i, p, _ in b]
    assert all(abs(x[2] - y[2]) <= 1e-5 for x, y in zip(a, b))


def test_two_servers_over_one_collection_agree_and_follow_an_index_run(tmp_path, tiny_model, milvus):
    lib, photos = _milvus_library(tmp_path, tiny_model, milvus.uri, 24)
    with (
        running_server(lib, tiny_model, tmp_path / "a.log") as a,
        running_server(lib, tiny_model, tmp_path / "b.log") as b,
        a.client() as ca,
        b.client() as cb,
    ):
        assert ca.get("/api/info").json()["index"]["kind"] == "milvus"
        for q in QUERIES:
            first = _hits(ca, q, 10)
            assert len(first) == 10
            _same_hits(first, _hits(cb, q, 10))

        # Meanwhile another process indexes: 8 photos deleted, 10 added. Both servers keep
        # answering (200) while it writes to the collection and commits the catalog.
        deleted = sorted(photos.iterdir())[::3]
        for p in deleted:
            p.unlink()
        added = make_photos(photos, 10, start_seed=500)
        statuses: list[int] = []
        stop = threading.Event()

        def ask_while_indexing():
            with a.client() as c1, b.client() as c2:
                while not stop.is_set():
                    for c in (c1, c2):
                        statuses.append(c.get("/api/search", params={"q": "a red sports car", "k": 10}).status_code)

        asker = threading.Thread(target=ask_while_indexing)
        asker.start()
        try:
            _index(photos, lib, tiny_model)  # the library's own kind and params: the same collection
        finally:
            stop.set()
            asker.join()
        assert statuses and set(statuses) == {200}, statuses
        print(f"{len(statuses)} searches answered while indexing")

        live = {str(p) for p in photos.iterdir()}
        assert len(live) == 24 - len(deleted) + len(added)
        for q in QUERIES:
            everything = _hits(ca, q, 100)  # every photo: exactly the live ones, new ones included
            assert {p for _, p, _ in everything} == live
            assert not {p for _, p, _ in everything} & {str(p) for p in deleted}
            _same_hits(everything, _hits(cb, q, 100))
            _same_hits(_hits(ca, q, 10), _hits(cb, q, 10))
        # "more like this" from a photo added while the servers ran
        new_id = next(i for i, p, _ in everything if p == str(added[0]))
        like_a = ca.get("/api/search", params={"image_id": new_id, "k": 5}).json()["results"]
        like_b = cb.get("/api/search", params={"image_id": new_id, "k": 5}).json()["results"]
        assert len(like_a) == 5 and [h["path"] for h in like_a] == [h["path"] for h in like_b]


def test_milvus_outage_is_a_503_and_the_same_server_recovers(tmp_path, tiny_model, milvus):
    lib, photos = _milvus_library(tmp_path, tiny_model, milvus.uri, 12, f"timeout={STORE_TIMEOUT}")
    with running_server(lib, tiny_model, tmp_path / "serve.log") as server, server.client() as c:
        before = _hits(c, "a dog on a beach", 5)
        milvus.kill()
        with open(photos / "photo_0003.jpg", "rb") as f:
            upload = f.read()
        # the first search after the kill (its call times out), then a search by photo (after the
        # failed reconnect: the next call connects first)
        for ask in (
            lambda: c.get("/api/search", params={"q": "a dog on a beach", "k": 5}),
            lambda: c.post("/api/search/image", files={"file": ("q.jpg", upload, "image/jpeg")}, params={"k": 3}),
        ):
            t0 = time.monotonic()
            r = ask()
            took = time.monotonic() - t0
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["status"] == 503 and "Milvus" in body["error"] and milvus.uri in body["error"]
            assert re.search(r"(?i)cannot connect|fail(ed)?( to)? connect", body["error"]), body["error"]  # says why
            assert "Traceback" not in body["error"] and "\n" not in body["error"]
            assert r.headers.get("retry-after")
            # one timeout for the call, what is left of it (>= 1 s) for one reconnect: not two timeouts
            assert took < 2 * STORE_TIMEOUT, f"a search took {took:.1f}s with Milvus down (timeout {STORE_TIMEOUT}s)"
            print(f"503 after {took:.2f}s: {body['error']}")
        assert c.get("/api/health").status_code == 200  # the server itself lives on

        # a server started while Milvus is down starts anyway (a fleet restarts one by one) and says 503
        with running_server(lib, tiny_model, tmp_path / "late.log") as late, late.client() as c2:
            r = c2.get("/api/search", params={"q": "a dog on a beach", "k": 5})
            assert r.status_code == 503 and "Milvus" in r.json()["error"], r.text

            milvus.start()  # the same data, the same port
            _same_hits(_hits(c, "a dog on a beach", 5), before)
            _same_hits(_hits(c2, "a dog on a beach", 5), before)
            assert server.proc.poll() is None
    # running_server checked at exit that the server logged no traceback (no 500s)


def _real_photos(folder: Path, n: int, skip: int = 0) -> list[Path]:
    files = sorted((shared_data("imagenet-val-1300") / "images").glob("*.JPEG"))
    if len(files) < skip + n:
        pytest.skip(f"needs {skip + n} photos in ../shared/data/imagenet-val-1300, found {len(files)}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files[skip : skip + n]:
        shutil.copyfile(f, folder / f.name)
        out.append(folder / f.name)
    return out


def test_real_photos_flat_and_milvus_give_the_same_top10(tmp_path, tiny_model, milvus):
    from pixquery.api import Library

    photos = tmp_path / "photos"
    _real_photos(photos, 200)
    query_photo = _real_photos(tmp_path / "query", 1, skip=200)[0]  # not in the library
    flat = tmp_path / "flat"
    _index(photos, flat, tiny_model, "--index", "flat")
    libraries = {"flat": flat}
    for name, params in {
        "milvus FLAT": ["index_type=FLAT"],
        "milvus IVF_FLAT": ["index_type=IVF_FLAT", "nlist=16", "nprobe=16"],
    }.items():
        lib = tmp_path / name.replace(" ", "-")
        shutil.copytree(flat, lib)  # the same stored embeddings, re-indexed: nothing is embedded again
        r = pixquery(
            "reindex",
            "-L",
            lib,
            "--index",
            "milvus",
            "--param",
            f"uri={milvus.uri}",
            *[a for p in params for a in ("--param", p)],
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        libraries[name] = lib

    def top(lib: Library, **query) -> list[tuple[str, float]]:
        return [(h.path, h.score) for h in lib.search(**query, k=20)]

    opened = {name: Library.open(path, create=False) for name, path in libraries.items()}
    try:
        for name, lib in opened.items():
            index = lib.info()["models"][0]["index"]
            assert index["kind"] == name.split()[0] and index["entries"] == 200
            assert index["params"].get("index_type") == (name.split() + [None])[1]
        for query in [{"query": q} for q in QUERIES] + [{"image": query_photo}]:
            expected = top(opened["flat"], **query)
            assert len(expected) == 20
            for name in ("milvus FLAT", "milvus IVF_FLAT"):
                got = top(opened[name], **query)
                assert [p for p, _ in got[:10]] == [p for p, _ in expected[:10]], (name, query)
                assert all(abs(g - e) <= 1e-5 for (_, g), (_, e) in zip(got[:10], expected[:10])), (name, query)
    finally:
        for lib in opened.values():
            lib.close()


def test_a_saved_index_takes_the_milvus_token_from_the_environment(tmp_path, milvus, monkeypatch):
    """The token is never saved, so a process that only loads the library (`pixquery serve`, a
    later `pixquery index`) reads it from $PIXQUERY_MILVUS_TOKEN. milvus-lite has no users, so
    what reaches the client is recorded on the way to the real one."""
    import pixquery.indexes.milvus as milvus_mod
    from pixquery.indexes import make_index, open_index

    given: list[str] = []

    class Recording(milvus_mod.MilvusClient):
        def __init__(self, *args, **kwargs):
            given.append(kwargs.get("token", ""))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(milvus_mod, "MilvusClient", Recording)
    monkeypatch.delenv(milvus_mod.TOKEN_ENV, raising=False)
    index = make_index("milvus", 8, uri=milvus.uri, index_type="FLAT", token="root:Milvus")
    index.save(tmp_path / "saved.idx")
    assert given == ["root:Milvus"]
    assert "root:Milvus" not in (tmp_path / "saved.idx" / "manifest.json").read_text()
    given.clear()
    open_index(tmp_path / "saved.idx")
    monkeypatch.setenv(milvus_mod.TOKEN_ENV, "root:Milvus")
    open_index(tmp_path / "saved.idx")
    assert given == ["", "root:Milvus"]
