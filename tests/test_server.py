"""The HTTP API, against a real `pixquery serve` process on 127.0.0.1 with the tiny test model.

Plus unit tests of the pieces that need no server (bind rules, Host check, thumbnail cache).
"""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from photos import make_photos, photo
from test_server_support import build_library, index_again, running_server

N_PHOTOS = 24


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("server")
    lib_path, photos = build_library(root, tiny_model, N_PHOTOS)
    with running_server(lib_path, tiny_model, root / "server.log") as server:
        server.lib_path, server.photos, server.model = lib_path, photos, tiny_model
        yield server


@pytest.fixture(scope="module")
def api(served):
    with served.client() as client:
        yield client


def _photo_id(served, name: str) -> int:
    from pixquery.catalog import Catalog

    cat = Catalog(served.lib_path / "catalog.sqlite")
    try:
        return cat.image_by_path(str(served.photos / name)).id
    finally:
        cat.close()


# -- library facts ------------------------------------------------------------------------------


def test_health_and_info(api, tiny_model):
    assert api.get("/api/health").json() == {"status": "ok", "version": "0.1.0"}
    info = api.get("/api/info").json()
    assert info["model"] == tiny_model.name
    assert info["images"] == N_PHOTOS
    assert info["index"]["kind"] == "auto" and info["index"]["entries"] == N_PHOTOS
    assert info["calibrated_threshold"] is None
    assert info["indexing"] is None
    assert info["limits"]["max_k"] == 200 and info["limits"]["max_results"] == 1000
    status = api.get("/api/status").json()
    assert status == {"images": N_PHOTOS, "index_entries": N_PHOTOS, "indexing": None}


def test_openapi_schema_lists_every_endpoint(api):
    schema = api.get("/api/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/api/health",
        "/api/info",
        "/api/status",
        "/api/search",
        "/api/search/image",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumbnail",
        "/api/images/{image_id}/original",
        "/api/duplicates",
    ):
        assert path in paths, path
    assert "multipart/form-data" in paths["/api/search/image"]["post"]["requestBody"]["content"]
    assert {p["name"] for p in paths["/api/search"]["get"]["parameters"]} >= {
        "q",
        "image_id",
        "upload_id",
        "k",
        "offset",
        "threshold",
    }


# -- search -------------------------------------------------------------------------------------


def test_text_search(api, served):
    r = api.get("/api/search", params={"q": "a dog on a beach", "k": 5})
    assert r.status_code == 200
    page = r.json()
    assert page["query"] == {"text": "a dog on a beach"}
    assert page["k"] == 5 and page["offset"] == 0 and page["next_offset"] == 5
    hits = page["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    for h in hits:
        assert h["path"].startswith(str(served.photos))
        assert h["name"] == os.path.basename(h["path"])
        assert h["thumbnail"].startswith(f"/api/images/{h['image_id']}/thumbnail?v=")
        assert h["original"] == f"/api/images/{h['image_id']}/original"
        assert h["width"] == 320 and h["height"] == 240 and h["size"] > 0
        assert abs(h["distance"] - np.arccos(np.clip(h["score"], -1, 1)) / np.pi) < 1e-5


def test_search_matches_the_library_api(api, served):
    from pixquery.api import Library

    with Library.open(served.lib_path, model=str(served.model)) as lib:
        expected = [(r.image_id, round(r.score, 4)) for r in lib.search("a red sports car", k=8)]
    hits = api.get("/api/search", params={"q": "a red sports car", "k": 8}).json()["results"]
    assert [(h["image_id"], round(h["score"], 4)) for h in hits] == expected


def test_pagination_is_consistent_and_k_is_capped(api):
    full = api.get("/api/search", params={"q": "mountains", "k": N_PHOTOS}).json()
    assert len(full["results"]) == N_PHOTOS and full["next_offset"] is None
    pages, offset = [], 0
    while offset is not None:
        page = api.get("/api/search", params={"q": "mountains", "k": 7, "offset": offset}).json()
        pages += page["results"]
        offset = page["next_offset"]
    assert [h["image_id"] for h in pages] == [h["image_id"] for h in full["results"]]
    assert [h["rank"] for h in pages] == list(range(1, N_PHOTOS + 1))
    capped = api.get("/api/search", params={"q": "mountains", "k": 100000}).json()
    assert capped["k"] == 200 and len(capped["results"]) == N_PHOTOS
    beyond = api.get("/api/search", params={"q": "mountains", "k": 10, "offset": 50}).json()
    assert beyond["results"] == [] and beyond["next_offset"] is None
    assert api.get("/api/search", params={"q": "mountains", "offset": 1001}).status_code == 422


def test_threshold(api, served):
    everything = api.get("/api/search", params={"q": "a cat", "k": N_PHOTOS}).json()
    assert everything["threshold"] is None and everything["dropped"] == 0
    median = sorted(h["distance"] for h in everything["results"])[N_PHOTOS // 2]
    cut = api.get("/api/search", params={"q": "a cat", "k": N_PHOTOS, "threshold": median}).json()
    assert cut["threshold"] == pytest.approx(median)
    assert all(h["distance"] <= median + 1e-9 for h in cut["results"])
    assert 0 < len(cut["results"]) < N_PHOTOS and cut["dropped"] > 0
    none = api.get("/api/search", params={"q": "a cat", "threshold": "0"}).json()
    assert none["results"] == []
    # 'auto' needs a calibrated threshold; once `pixquery eval` stored one, info shows it and auto uses it.
    r = api.get("/api/search", params={"q": "a cat", "threshold": "auto"})
    assert r.status_code == 400 and "calibrated" in r.json()["error"]
    from pixquery.catalog import Catalog
    from pixquery.encoders.registry import load_encoder

    enc = load_encoder(str(served.model))
    cat = Catalog(served.lib_path / "catalog.sqlite")
    try:
        cat.set_threshold(enc.name, enc.fingerprint, median, source="test")
        assert api.get("/api/info").json()["calibrated_threshold"] == pytest.approx(median)
        auto = api.get("/api/search", params={"q": "a cat", "k": N_PHOTOS, "threshold": "auto"}).json()
        assert auto["threshold"] == pytest.approx(median)
        assert [h["image_id"] for h in auto["results"]] == [h["image_id"] for h in cut["results"]]
    finally:
        with cat.transaction():
            cat.db.execute("UPDATE model SET threshold = NULL WHERE fingerprint = ?", (enc.fingerprint,))
        cat.close()


def test_search_by_image_id_excludes_itself(api, served):
    target = _photo_id(served, "photo_0003.jpg")
    page = api.get("/api/search", params={"image_id": target, "k": 5}).json()
    assert page["query"] == {"image_id": target}
    ids = [h["image_id"] for h in page["results"]]
    assert len(ids) == 5 and target not in ids
    r = api.get("/api/search", params={"image_id": 987654})
    assert r.status_code == 404 and r.json() == {"error": "no image with id 987654", "status": 404}


def test_search_by_uploaded_image(api, served):
    data = (served.photos / "photo_0005.jpg").read_bytes()
    target = _photo_id(served, "photo_0005.jpg")
    r = api.post("/api/search/image", params={"k": 4}, files={"file": ("mine.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["results"][0]["image_id"] == target
    assert page["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    upload_id = page["upload_id"]
    assert page["query"] == {"upload_id": upload_id} and page["next_offset"] == 4
    # The same bytes as a raw body give the same answer; later pages need no second upload.
    raw = api.post("/api/search/image", params={"k": 4}, content=data, headers={"Content-Type": "image/jpeg"}).json()
    assert raw["upload_id"] == upload_id and raw["results"] == page["results"]
    more = api.get("/api/search", params={"upload_id": upload_id, "k": 4, "offset": 4}).json()
    assert [h["rank"] for h in more["results"]] == [5, 6, 7, 8]
    assert not {h["image_id"] for h in more["results"]} & {h["image_id"] for h in page["results"]}
    assert api.get("/api/search", params={"upload_id": "0" * 32}).status_code == 404


def test_answers_say_their_server_time(api):
    """Server-Timing: app;dur=MS on every answer (developer tools show it; bench/typing_latency.py
    reads it): the time inside the server, at least the search's own took_ms."""
    r = api.get("/api/search", params={"q": "a kite over a field", "k": 5})
    name, _, dur = r.headers["server-timing"].partition(";dur=")
    assert name == "app" and float(dur) >= r.json()["took_ms"] > 0
    assert api.get("/api/health").headers["server-timing"].startswith("app;dur=")


def test_query_cache_answers_a_repeat_without_the_text_encoder(served):
    """A query asked again (or its next page) is answered from the server's text cache: the real
    encoder is not called again, and the answer is the same."""
    from pixquery.server.app import Server, ServerConfig

    server = Server(ServerConfig(library=served.lib_path, model=str(served.model), warm=False))
    try:
        q = "a lighthouse at dusk seen from the sea"
        first = server.search(text=q, k=3, offset=0, threshold=None)
        assert server.texts.calls == 1 and len(first["results"]) == 3
        again = server.search(text=q, k=3, offset=0, threshold=None)
        next_page = server.search(text=f"  {q} ", k=3, offset=3, threshold=None)  # stripped: the same text
        assert server.texts.calls == 1  # both answered from the cache
        assert again["results"] == first["results"]
        assert {r["path"] for r in next_page["results"]}.isdisjoint(r["path"] for r in first["results"])
        server.search(text=q + " at night", k=3, offset=0, threshold=None)
        assert server.texts.calls == 2  # a new text does reach the encoder
    finally:
        server.close()


# -- images -------------------------------------------------------------------------------------


def test_image_metadata(api, served):
    image_id = _photo_id(served, "photo_0002.jpg")
    meta = api.get(f"/api/images/{image_id}").json()
    path = served.photos / "photo_0002.jpg"
    assert meta["path"] == str(path) and meta["name"] == "photo_0002.jpg" and meta["folder"] == str(served.photos)
    assert meta["size"] == path.stat().st_size and (meta["width"], meta["height"]) == (320, 240)
    assert meta["content_type"] == "image/jpeg"
    assert meta["preview"] == meta["original"] == f"/api/images/{image_id}/original"
    assert meta["similar"] == f"/api/search?image_id={image_id}"
    assert meta["modified"].endswith("+00:00")


def test_exif_date_taken(api, served, tmp_path):
    img = photo(seed=77)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = "2019:07:14 18:30:05"
    img.save(served.photos / "dated.jpg", exif=exif.tobytes())
    index_again(served.lib_path, served.model)
    meta = api.get(f"/api/images/{_photo_id(served, 'dated.jpg')}").json()
    assert meta["taken"] == "2019-07-14T18:30:05"


def test_thumbnail_is_cached_with_caching_headers(api, served):
    image_id = _photo_id(served, "photo_0007.jpg")
    hit = next(
        h
        for h in api.get("/api/search", params={"image_id": _photo_id(served, "photo_0006.jpg"), "k": N_PHOTOS}).json()[
            "results"
        ]
        if h["image_id"] == image_id
    )
    r = api.get(hit["thumbnail"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and max(thumb.size) == 256 and thumb.size == (256, 192)
    cached = list((served.lib_path / "thumbnails").rglob(f"{image_id}-*-256.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.content
    mtime = cached[0].stat().st_mtime_ns
    etag = r.headers["etag"]
    assert api.get(hit["thumbnail"], headers={"If-None-Match": etag}).status_code == 304
    again = api.get(f"/api/images/{image_id}/thumbnail")  # no version: still served, revalidated
    assert again.content == r.content and again.headers["cache-control"] == "private, no-cache"
    assert cached[0].stat().st_mtime_ns == mtime  # made once
    big = api.get(f"/api/images/{image_id}/thumbnail", params={"size": 1024})
    assert big.status_code == 200 and Image.open(io.BytesIO(big.content)).size == (320, 240)  # never upscaled
    assert api.get(f"/api/images/{image_id}/thumbnail", params={"size": 100}).status_code == 422


def test_changed_photo_gets_a_new_thumbnail(api, served):
    path = served.photos / "photo_0008.jpg"
    image_id = _photo_id(served, "photo_0008.jpg")
    first = api.get(f"/api/images/{image_id}/thumbnail")
    photo(seed=1234).save(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = api.get(f"/api/images/{image_id}/thumbnail")
    assert second.status_code == 200 and second.content != first.content
    assert second.headers["etag"] != first.headers["etag"]
    cached = list((served.lib_path / "thumbnails").rglob(f"{image_id}-*-256.jpg"))
    assert len(cached) == 1  # the old version was removed


def test_original(api, served):
    image_id = _photo_id(served, "photo_0004.jpg")
    r = api.get(f"/api/images/{image_id}/original")
    assert r.status_code == 200
    assert r.content == (served.photos / "photo_0004.jpg").read_bytes()
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-length"] == str(len(r.content))
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]
    assert api.get(f"/api/images/{image_id}/original", headers={"If-None-Match": r.headers["etag"]}).status_code == 304


# -- errors are JSON, never a 500 ---------------------------------------------------------------


@pytest.mark.parametrize(
    "params, status",
    [
        ({}, 422),
        ({"q": ""}, 400),
        ({"q": "   "}, 400),
        ({"q": "x" * 501}, 422),
        ({"q": "dog +"}, 400),  # the inline syntax: an operator with nothing after it
        ({"q": "dog", "add": ""}, 400),
        ({"q": "dog", "like": -1}, 422),
        ({"q": "dog", "k": 0}, 422),
        ({"q": "dog", "k": "ten"}, 422),
        ({"q": "dog", "offset": -1}, 422),
        ({"q": "dog", "threshold": "1.5"}, 422),
        ({"q": "dog", "threshold": "-0.1"}, 422),
        ({"q": "dog", "threshold": "nan"}, 422),
        ({"q": "dog", "threshold": "much"}, 422),
        ({"q": "dog", "threshold": "AUTO"}, 422),
        ({"q": "dog", "threshold": ""}, 422),
        ({"q": "dog", "threshold": "0x1"}, 422),
        ({"q": "dog", "threshold": "1_0"}, 422),
        ({"q": "dog", "offset": 1000}, 422),
        ({"image_id": "abc"}, 422),
        ({"image_id": -3}, 422),
        ({"image_id": 2**70}, 422),
        ({"upload_id": "../../etc/passwd"}, 422),
    ],
)
def test_bad_parameters_give_a_json_4xx(api, params, status):
    r = api.get("/api/search", params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in r.text


def test_unknown_routes_and_methods_are_json(api):
    r = api.get("/api/nothing-here")
    assert r.status_code == 404 and r.json() == {"error": "not found", "status": 404}
    r = api.delete("/api/search")
    assert r.status_code == 405 and r.json()["status"] == 405
    assert api.get("/api/images/999999").status_code == 404


def test_long_query_within_the_cap_works(api):
    r = api.get("/api/search", params={"q": "a very long description of a photo " * 14, "k": 2})  # 490 chars
    assert r.status_code == 200 and len(r.json()["results"]) == 2


# -- the page -----------------------------------------------------------------------------------


def test_page_and_static_files(api):
    r = api.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in r.text
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        s = api.get(f"/static/{name}")
        assert s.status_code == 200 and s.headers["content-type"].startswith(ctype)
        assert api.get(f"/static/{name}", headers={"If-None-Match": s.headers["etag"]}).status_code == 304
    assert api.get("/static/nothing.js").status_code == 404


# -- the library changes while the server runs --------------------------------------------------


def test_new_index_is_picked_up_without_restart(api, served):
    before = api.get("/api/info").json()
    new = make_photos(served.photos, 3, start_seed=500)
    index_again(served.lib_path, served.model)
    info = api.get("/api/info").json()
    assert info["images"] == before["images"] + 3
    assert info["index"]["entries"] == before["index"]["entries"] + 3
    ids = {_photo_id(served, p.name) for p in new}
    hits = api.get("/api/search", params={"q": "anything", "k": 1000}).json()["results"]
    assert ids <= {h["image_id"] for h in hits}
    for p in new:  # and the new photos can be found by themselves
        r = api.post("/api/search/image", params={"k": 1}, files={"file": (p.name, p.read_bytes(), "image/jpeg")})
        assert r.json()["results"][0]["image_id"] == _photo_id(served, p.name)


def test_indexing_progress_is_reported(api, served):
    from pixquery.api import STATUS_FILE

    status = {
        "pid": os.getpid(),
        "stage": "embedding",
        "done": 40,
        "total": 100,
        "failed": 1,
        "started_at": time.time(),
    }
    path = served.lib_path / STATUS_FILE
    path.write_text(json.dumps(status))
    try:
        got = api.get("/api/status").json()["indexing"]
        assert got["stage"] == "embedding" and got["done"] == 40 and got["total"] == 100 and "pid" not in got
        assert api.get("/api/info").json()["indexing"]["done"] == 40
    finally:
        path.unlink()
    assert api.get("/api/status").json()["indexing"] is None


# -- pieces, no server --------------------------------------------------------------------------


def test_bind_rules():
    from pixquery.errors import PixqueryError
    from pixquery.server.app import check_bind, is_loopback

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert is_loopback(host)
        check_bind(host, None, False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(PixqueryError, match="--token"):
            check_bind(host, None, False)
        check_bind(host, "secret", False)
        check_bind(host, None, True)


def test_host_header_check():
    from pixquery.server.app import _loopback_host_header

    for ok in ("127.0.0.1:8765", "localhost:8765", "localhost", "[::1]:8765", "127.0.0.1", "LOCALHOST:1"):
        assert _loopback_host_header(ok), ok
    for bad in (
        "evil.example:8765",
        "evil.example",
        "127.0.0.1.evil.example",
        "",
        "localhost.evil.example:80",
        "[::2]:80",
    ):
        assert not _loopback_host_header(bad), bad


def test_thumbnail_cache_writes_atomically(tmp_path):
    from pixquery.server.thumbnails import Thumbnails

    src = tmp_path / "p.jpg"
    photo((640, 480), seed=5).save(src)
    thumbs = Thumbnails(tmp_path / "thumbs")
    with open(src, "rb") as f:
        data, key = thumbs.get(7, f, os.stat(src), 256)
    assert Image.open(io.BytesIO(data)).size == (256, 192)
    files = [p for p in (tmp_path / "thumbs").rglob("*") if p.is_file()]
    assert [p.name for p in files] == [f"{key}.jpg"]  # no temporary file left behind
    with open(src, "rb") as f:
        assert thumbs.get(7, f, os.stat(src), 256) == (data, key)
    assert thumbs.made == 1


class _FakeEncoder:
    def __init__(self, fail_on: str | None = None, delay: float = 0.0):
        self.calls: list[list[str]] = []
        self.fail_on, self.delay = fail_on, delay

    def encode_texts(self, texts):
        self.calls.append(list(texts))
        time.sleep(self.delay)
        if self.fail_on in texts:
            raise RuntimeError("boom")
        return np.array([[float(len(t)), float(sum(map(ord, t)))] for t in texts], np.float32)


@pytest.mark.parametrize("batch", [1, 8])
def test_text_encoder_cache_and_batching(batch):
    from concurrent.futures import ThreadPoolExecutor

    from pixquery.server.app import TextEncoder

    fake = _FakeEncoder(delay=0.05)
    texts = TextEncoder(fake, cache_size=100, batch=batch)
    queries = [f"query {i}" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(texts.encode, queries))
    for q, v in zip(queries, got):
        assert v.tolist() == [float(len(q)), float(sum(map(ord, q)))]
    n_calls = len(fake.calls)
    assert sorted(t for call in fake.calls for t in call) == sorted(queries)
    if batch == 1:
        assert n_calls == 12
    else:
        assert n_calls < 12 and max(len(c) for c in fake.calls) <= batch  # concurrent queries shared calls
    assert texts.encode("query 3").tolist() == got[3].tolist()
    assert len(fake.calls) == n_calls  # answered from the cache


def test_text_encoder_error_reaches_the_caller_and_the_worker_survives():
    from pixquery.server.app import TextEncoder

    texts = TextEncoder(_FakeEncoder(fail_on="bad"), batch=4)
    with pytest.raises(RuntimeError, match="boom"):
        texts.encode("bad")
    assert texts.encode("good").tolist() == [4.0, float(sum(map(ord, "good")))]


def test_preview_of_a_format_browsers_cannot_show(api, served):
    photo((400, 300), seed=31).save(served.photos / "scan.tif")
    index_again(served.lib_path, served.model)
    image_id = _photo_id(served, "scan.tif")
    meta = api.get(f"/api/images/{image_id}").json()
    assert meta["content_type"] == "image/tiff"
    assert meta["preview"].startswith(f"/api/images/{image_id}/thumbnail?size=1024&v=")
    preview = api.get(meta["preview"])
    assert preview.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(preview.content)).size == (400, 300)
    original = api.get(meta["original"])
    assert (
        original.headers["content-type"] == "image/tiff"
        and original.content == (served.photos / "scan.tif").read_bytes()
    )


def test_library_without_an_index_answers_503(tmp_path, tiny_model):
    from pixquery.api import Library

    Library.open(tmp_path / "empty", model=str(tiny_model)).close()  # a catalog, nothing indexed
    with running_server(tmp_path / "empty", tiny_model, tmp_path / "server.log") as server, server.client() as c:
        info = c.get("/api/info").json()
        assert info["images"] == 0 and info["index"] is None
        r = c.get("/api/search", params={"q": "a dog"})
        assert r.status_code == 503 and "no index" in r.json()["error"] and "pixquery index" in r.json()["error"]
        assert c.get("/").status_code == 200  # the page still loads (and says: no index yet)


def test_serve_refuses_a_missing_library(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "pixquery.server", "--library", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="300"),
    )
    assert r.returncode == 2
    assert f"no library at {tmp_path / 'nowhere'}" in r.stderr
    assert not (tmp_path / "nowhere").exists()  # and nothing was created there


def test_serve_is_a_pixquery_command():
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "pixquery.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, COLUMNS="200", NO_COLOR="1"),
    )
    assert r.returncode == 0
    for option in ("--library", "--model", "--host", "--port", "--token", "--allow-public", "PIXQUERY_TOKEN"):
        assert option in r.stdout


# -- videos -------------------------------------------------------------------------------------


def test_video_hits_have_frame_thumbnails_and_a_seekable_original(api, served):
    pytest.importorskip("av", reason="video support needs PyAV (the [video] extra)")
    from videos import make_video

    path = make_video(served.photos / "clip.mp4", [(3.0, 11), (3.0, 12)], fps=10, size=(160, 96))
    index_again(served.lib_path, served.model)
    hits = api.get("/api/search", params={"q": "a clip", "k": 200}).json()["results"]
    videos = [h for h in hits if h["kind"] == "video"]
    assert videos, "the video's frames should be in the index"
    h = videos[0]
    assert h["path"] == str(path) and h["image_id"] is None and h["timestamp"] is not None
    assert h["original"] == f"/api/videos/{h['video_id']}/original"
    assert h["thumbnail"].startswith(f"/api/videos/{h['video_id']}/frame?t=")
    frame = api.get(h["thumbnail"])
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    assert frame.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert Image.open(io.BytesIO(frame.content)).size == (160, 96)
    assert api.get(h["thumbnail"], headers={"If-None-Match": frame.headers["etag"]}).status_code == 304
    assert list((served.lib_path / "thumbnails" / "videos").rglob(f"v{h['video_id']}-*.jpg"))

    data = path.read_bytes()
    full = api.get(h["original"])
    assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    part = api.get(h["original"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = api.get(h["original"], headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert api.get(h["original"], headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    # Several ranges: the whole file (RFC 9110 lets a server ignore Range); 416 only when none fits.
    several = api.get(h["original"], headers={"Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.content == data and "content-range" not in several.headers
    assert api.get(h["original"], headers={"Range": f"bytes={len(data)}-,{len(data) + 5}-"}).status_code == 416
    # A header that is not understood (another unit, bad syntax) is ignored, as RFC 9110 says.
    for ignored in ("items=0-1", "bytes=5-2", "bytes=abc"):
        r = api.get(h["original"], headers={"Range": ignored})
        assert r.status_code == 200 and r.content == data, ignored

    assert api.get(f"/api/videos/{h['video_id']}/frame", params={"t": 1, "size": 100}).status_code == 422
    assert api.get("/api/videos/987654/frame").status_code == 404
    assert api.get("/api/videos/987654/original").json() == {"error": "no video with id 987654", "status": 404}
    assert api.get(f"/api/videos/{h['video_id']}/frame", params={"t": -1}).status_code == 422


def test_byte_ranges_on_photos_too(api, served):
    image_id = _photo_id(served, "photo_0010.jpg")
    data = (served.photos / "photo_0010.jpg").read_bytes()
    r = api.get(f"/api/images/{image_id}/original", headers={"Range": "bytes=10-"})
    assert r.status_code == 206 and r.content == data[10:]


def test_serve_on_a_busy_port_says_so_before_serving(tmp_path, tiny_model):
    """Bind first: a busy port is one line and exit 2, never "serving on ..." then a traceback (issue 11 item 14)."""
    import socket
    import subprocess
    import sys

    from test_server_support import build_library

    lib_path, _ = build_library(tmp_path, tiny_model, 2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pixquery.cli",
                "serve",
                "--library",
                str(lib_path),
                "--model",
                str(tiny_model),
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="80"),
        )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert f"port {port} is in use" in r.stderr and "--port" in r.stderr
    assert "serving" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_accepted_connections_send_without_nagle():
    """The listening socket `pixquery serve` makes is a TCP one (proto IPPROTO_TCP), so asyncio sets
    TCP_NODELAY on every connection it accepts. With proto 0 it did not, and an answer's body
    (written after its headers) could wait for the client's delayed ACK: ~45 ms a request on
    loopback when requests come in quick succession, /api/health included (bench/results/library-1m.md)."""
    import asyncio
    import socket

    from pixquery.server.cli import _listen

    sock = _listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    assert sock.proto == socket.IPPROTO_TCP
    seen = []

    async def main():
        def handle(reader, writer):
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(200):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
