"""Safe by default: token, Host check, files only by catalog id, bounded uploads, bomb guard.

Every attempt must be refused with the right status (and a JSON body), never a 200 with the
wrong file and never a 500: the server fixture fails the module if the server logged a traceback.
"""

from __future__ import annotations

import http.client
import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest

from photos import photo
from test_server_support import TOKEN, build_library, free_port, index_again, running_server

MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    """A library with awkward files: links out, a link to a folder outside, a FIFO, a deleted row."""
    root = tmp_path_factory.mktemp("security")
    outside = root / "outside"
    outside.mkdir()
    photo(seed=900).save(outside / "secret.jpg")
    (outside / "secret.txt").write_text("root:x:0:0:secret\n")
    (outside / "linked_folder").mkdir()
    photo(seed=901).save(outside / "linked_folder" / "far.jpg")
    photo(seed=902).save(outside / "single.jpg")
    (outside / "real_dir").mkdir()
    photo(seed=903).save(outside / "real_dir" / "solo.jpg")
    os.symlink(outside / "real_dir", outside / "link_dir")  # like /tmp -> /private/tmp on macOS
    lib_path, photos = build_library(root, tiny_model, 12)
    os.symlink(outside / "linked_folder", photos / "linked_folder")
    index_again(lib_path, tiny_model, [photos, outside / "single.jpg", outside / "link_dir" / "solo.jpg"])
    from pixquery.catalog import Catalog

    cat = Catalog(lib_path / "catalog.sqlite")
    ids = {Path(p).name: cat.image_by_path(p).id for p in cat.images_under("/")}
    # After indexing, files change under the server's feet:
    (photos / "photo_0001.jpg").unlink()
    os.symlink(outside / "secret.jpg", photos / "photo_0001.jpg")  # a photo replaced by a link out
    (photos / "photo_0002.jpg").unlink()
    os.mkfifo(photos / "photo_0002.jpg")  # a FIFO: opening it must not hang the server
    (photos / "photo_0005.jpg").unlink()
    os.symlink(photos / "photo_0006.jpg", photos / "photo_0005.jpg")  # a link that stays inside: fine
    (photos / "photo_0007.jpg").unlink()
    os.symlink(outside / "secret.txt", photos / "photo_0007.jpg")  # a link to a non-image
    with cat.transaction():
        cat.mark_deleted([ids["photo_0004.jpg"]])  # deleted, not yet purged
    cat.close()
    with running_server(
        lib_path, tiny_model, root / "server.log", extra=["--max-upload-mb", str(MAX_UPLOAD_MB)]
    ) as server:
        server.ids, server.photos, server.outside, server.lib_path, server.model = (
            ids,
            photos,
            outside,
            lib_path,
            tiny_model,
        )
        yield server


@pytest.fixture(scope="module")
def api(setup):
    with setup.client() as client:
        yield client


def _raw_get(server, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (no client-side normalisation of ../ or %2e)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}", **(headers or {})})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _is_json_error(body: bytes, status: int) -> bool:
    import json

    try:
        data = json.loads(body)
    except ValueError:
        return False
    return data.get("status") == status and bool(data.get("error"))


# -- token --------------------------------------------------------------------------------------

PROTECTED = [
    "/api/health",
    "/api/info",
    "/api/search?q=dog",
    "/api/images/1",
    "/api/images/1/thumbnail",
    "/api/images/1/original",
    "/api/openapi.json",
    "/api/docs",
    "/static/app.js",
    "/nothing",
    "/api/duplicates",
    "/duplicates",
    "/static/duplicates.js",
]


@pytest.mark.parametrize("path", PROTECTED)
def test_missing_token_is_refused(setup, path):
    r = httpx.get(setup.url + path)
    assert r.status_code == 401
    assert r.json() == {
        "error": "this pixquery server needs a token (send it as 'Authorization: Bearer TOKEN')",
        "status": 401,
    }
    assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("how", ["bearer", "header", "cookie", "query", "empty-bearer", "basic", "prefix", "case"])
def test_wrong_token_is_refused(setup, how):
    wrong = {
        "bearer": {"Authorization": "Bearer nope"},
        "header": {"X-Pixquery-Token": "nope"},
        "cookie": {"Cookie": "pixquery_token=nope"},
        "query": {},
        "empty-bearer": {"Authorization": "Bearer"},
        "basic": {"Authorization": "Basic dGVzdDp0ZXN0"},
        "prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
        "case": {"Authorization": f"Bearer {TOKEN.upper()}"},
    }[how]
    params = {"token": TOKEN} if how == "query" else {}  # the token in an API URL is not accepted
    r = httpx.get(setup.url + "/api/info", headers=wrong, params=params)
    assert r.status_code == 401 and r.json()["status"] == 401


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {TOKEN}"}, {"X-Pixquery-Token": TOKEN}, {"Cookie": f"pixquery_token={TOKEN}"}],
)
def test_right_token_in_each_place_is_accepted(setup, headers):
    assert httpx.get(setup.url + "/api/info", headers=headers).status_code == 200


def test_page_login_flow(setup):
    r = httpx.get(setup.url + "/")
    assert r.status_code == 401 and r.headers["content-type"].startswith("text/html") and "<form" in r.text
    assert httpx.get(setup.url + "/", params={"token": "nope"}).status_code == 401
    r = httpx.get(setup.url + "/", params={"token": TOKEN})
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"pixquery_token={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    with httpx.Client(base_url=setup.url) as browser:
        browser.cookies.set("pixquery_token", TOKEN)
        assert browser.get("/").status_code == 200
        assert browser.get("/api/info").status_code == 200


def test_foreign_host_header_is_refused(setup):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not reach the API."""
    for host in ("evil.example", f"evil.example:{setup.url.rsplit(':', 1)[1]}", "127.0.0.1.nip.io"):
        status, body = _raw_get(setup, "/api/info", headers={"Host": host})
        assert status == 400 and _is_json_error(body, 400)
    assert _raw_get(setup, "/api/info", headers={"Host": "localhost"})[0] == 200


def test_public_bind_without_token_is_refused(tmp_path, setup):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PIXQUERY_TOKEN", None)
    cmd = [
        sys.executable,
        "-m",
        "pixquery.server",
        "--library",
        str(setup.lib_path),
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in r.stderr and "--allow-public" in r.stderr
    with socket.socket() as s:  # and nothing was listening in the meantime
        assert s.connect_ex(("127.0.0.1", port)) != 0


# -- files only by catalog id -------------------------------------------------------------------

TRAVERSALS = [
    "/api/images/../../../../etc/passwd",
    "/api/images/1/../../../../etc/passwd",
    "/api/images/..%2f..%2f..%2f..%2fetc%2fpasswd/original",
    "/api/images/%2e%2e/%2e%2e/etc/passwd",
    "/api/images/%2Fetc%2Fpasswd/original",
    "/api/images//etc/passwd/original",
    "/api/images/1%00/original",
    "/api/images/1%2F..%2F..%2Fetc%2Fpasswd/original",
    "/api/images/-1/original",
    "/api/images/1.0/original",
    "/api/images/0x1/original",
    "/api/images/99999999999999999999999/original",
    "/static/../../../../../../etc/passwd",
    "/static/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/%2e%2e%2f%2e%2e%2fapp.py",
    "/static/%2e%2e/%2e%2e/app.py",
    "/static/..%5c..%5capp.py",
    "/static/%252e%252e%252fapp.py",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/static/....//....//etc/passwd",
    "/static/..%c0%af..%c0%afetc/passwd",
    "/../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/etc/passwd",
    "//etc/passwd",
    "/api/search?image_id=../../etc/passwd",
    "/api/images/1/thumbnail?size=../../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_is_refused(setup, path):
    status, body = _raw_get(setup, path)
    assert status in (404, 422), (status, body[:200])
    assert _is_json_error(body, status)
    assert b"root:" not in body and b"import " not in body


def test_a_path_in_the_query_is_ignored(setup, api):
    image_id = setup.ids["photo_0003.jpg"]
    r = api.get(f"/api/images/{image_id}/original", params={"path": "/etc/passwd", "file": "../../etc/passwd"})
    assert r.status_code == 200 and r.content == (setup.photos / "photo_0003.jpg").read_bytes()


def _all_refused(api, image_id):
    for url in (
        f"/api/images/{image_id}",
        f"/api/images/{image_id}/original",
        f"/api/images/{image_id}/thumbnail",
        f"/api/images/{image_id}/thumbnail?size=1024",
    ):
        r = api.get(url)
        assert r.status_code == 404, (url, r.status_code)
        assert r.json() == {"error": f"no image with id {image_id}", "status": 404}


def test_photo_replaced_by_a_symlink_out_of_the_library(setup, api):
    _all_refused(api, setup.ids["photo_0001.jpg"])


def test_symlink_to_a_folder_outside_the_library(setup, api):
    # Indexed through photos/linked_folder -> outside/linked_folder: it resolves outside the
    # library's folders, so it is not served (index that folder itself to serve it).
    _all_refused(api, setup.ids["far.jpg"])


def test_symlink_to_a_non_image(setup, api):
    _all_refused(api, setup.ids["photo_0007.jpg"])


def test_fifo_is_refused_without_hanging(setup, api):
    t0 = time.monotonic()
    _all_refused(api, setup.ids["photo_0002.jpg"])
    assert time.monotonic() - t0 < 10


def test_deleted_image_is_refused(setup, api):
    image_id = setup.ids["photo_0004.jpg"]
    _all_refused(api, image_id)
    r = api.get("/api/search", params={"image_id": image_id})
    assert r.status_code == 404
    assert image_id not in [
        h["image_id"] for h in api.get("/api/search", params={"q": "x", "k": 100}).json()["results"]
    ]


def test_never_indexed_id_is_refused(setup, api):
    _all_refused(api, 424242)


def test_symlink_inside_the_library_is_served(setup, api):
    r = api.get(f"/api/images/{setup.ids['photo_0005.jpg']}/original")
    assert r.status_code == 200 and r.content == (setup.photos / "photo_0006.jpg").read_bytes()


def test_file_indexed_on_its_own_is_served_until_it_becomes_a_link(setup, api):
    image_id = setup.ids["single.jpg"]
    single = setup.outside / "single.jpg"
    r = api.get(f"/api/images/{image_id}/original")
    assert r.status_code == 200 and r.content == single.read_bytes()
    moved = setup.outside / "single-moved.jpg"
    single.rename(moved)
    os.symlink(setup.outside / "secret.jpg", single)
    try:
        _all_refused(api, image_id)
    finally:
        single.unlink()
        moved.rename(single)


def test_file_indexed_on_its_own_through_a_linked_folder_is_served(setup, api):
    r = api.get(f"/api/images/{setup.ids['solo.jpg']}/original")
    assert r.status_code == 200 and r.content == (setup.outside / "real_dir" / "solo.jpg").read_bytes()


def test_file_removed_from_disk(setup, api):
    path = setup.photos / "photo_0008.jpg"
    data = path.read_bytes()
    path.unlink()
    try:
        _all_refused(api, setup.ids["photo_0008.jpg"])
    finally:
        path.write_bytes(data)


# -- uploads ------------------------------------------------------------------------------------


def _jpeg(size=(320, 240), seed=3) -> bytes:
    buf = io.BytesIO()
    photo(size, seed=seed).save(buf, "JPEG")
    return buf.getvalue()


def test_upload_within_the_limit_works(api):
    r = api.post("/api/search/image", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
    assert r.status_code == 200 and r.json()["results"]


def test_oversized_upload_declared(api):
    big = os.urandom(MAX_UPLOAD_MB * 1024 * 1024 + 200_000)
    r = api.post("/api/search/image", content=big, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and r.json() == {"error": "upload too large: the limit is 1 MiB", "status": 413}
    r = api.post("/api/search/image", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and r.json()["status"] == 413


def test_oversized_upload_streamed_without_length(api):
    def body():
        chunk = b"\xff" * 65536
        for _ in range(40):  # 2.5 MiB, chunked transfer encoding: no Content-Length to check up front
            yield chunk

    r = api.post("/api/search/image", content=body(), headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["status"] == 413


def test_oversized_multipart_streamed_without_length(api):
    boundary = "b0undary"

    def body():
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        for _ in range(40):
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = api.post(
        "/api/search/image", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert r.status_code == 413


def _png_bomb_header_only(w: int, h: int) -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _png_bomb_real(w: int, h: int) -> bytes:
    """A complete, valid greyscale PNG of w x h black pixels: tiny on the wire, w*h bytes decoded."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    parts = [comp.compress(row * 64) for _ in range(h // 64)]
    parts.append(comp.compress(row * (h % 64)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("kind", ["header-only", "real"])
def test_decompression_bomb_upload(api, kind):
    data = _png_bomb_header_only(60000, 60000) if kind == "header-only" else _png_bomb_real(12000, 12000)
    assert len(data) < MAX_UPLOAD_MB * 1024 * 1024  # it passes the size limit: the pixel guard must stop it
    t0 = time.monotonic()
    r = api.post("/api/search/image", files={"file": ("bomb.png", data, "image/png")})
    assert r.status_code == 413, r.text
    assert "pixel limit" in r.json()["error"] and "decompression bomb" in r.json()["error"]
    assert time.monotonic() - t0 < 10  # refused from the header, not after decoding 144 MP


@pytest.mark.parametrize(
    "case, status",
    [
        ("not-an-image", 400),
        ("truncated", 400),
        ("empty", 400),
        ("text-type", 415),
        ("no-file-field", 422),
    ],
)
def test_bad_uploads(api, case, status):
    if case == "not-an-image":
        r = api.post("/api/search/image", files={"file": ("x.jpg", b"hello, I am text" * 100, "image/jpeg")})
    elif case == "truncated":
        r = api.post("/api/search/image", files={"file": ("x.jpg", _jpeg((640, 480))[:3000], "image/jpeg")})
    elif case == "empty":
        r = api.post("/api/search/image", content=b"", headers={"Content-Type": "image/jpeg"})
    elif case == "text-type":
        r = api.post("/api/search/image", content=b"abc", headers={"Content-Type": "text/plain"})
    else:  # a form with a text field and no file
        body = b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nvalue\r\n--x--\r\n'
        r = api.post("/api/search/image", content=body, headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == status, r.text
    assert r.json()["status"] == status


def test_multipart_limits(api):
    """The form parser's limits: one file, a few fields, small non-file fields; over them, a 400."""
    jpeg = _jpeg()
    two = api.post(
        "/api/search/image", files=[("file", ("a.jpg", jpeg, "image/jpeg")), ("more", ("b.jpg", jpeg, "image/jpeg"))]
    )
    assert two.status_code == 400 and "files" in two.json()["error"], two.text
    many = api.post(
        "/api/search/image", data={f"f{i}": "x" for i in range(50)}, files={"file": ("a.jpg", jpeg, "image/jpeg")}
    )
    assert many.status_code == 400 and "fields" in many.json()["error"], many.text
    long_field = api.post(
        "/api/search/image", data={"note": "x" * 100_000}, files={"file": ("a.jpg", jpeg, "image/jpeg")}
    )
    assert long_field.status_code == 400 and "part" in long_field.json()["error"], long_field.text
    ok = api.post("/api/search/image", data={"note": "holiday"}, files={"file": ("a.jpg", jpeg, "image/jpeg")})
    assert ok.status_code == 200 and ok.json()["results"]


def test_query_length_is_capped(api):
    assert api.get("/api/search", params={"q": "a" * 500, "k": 1}).status_code == 200
    r = api.get("/api/search", params={"q": "a" * 501})
    assert r.status_code == 422 and "500 characters" in r.json()["error"]


def test_huge_request_line_is_refused(setup, api):
    try:
        status, _ = _raw_get(setup, "/api/search?q=" + "a" * 200_000)
        assert 400 <= status < 500
    except ConnectionError:
        pass  # the HTTP server dropped the connection (uvicorn's header size limit): refused too
    assert api.get("/api/health").status_code == 200


def test_videos_follow_the_same_rules(setup, api):
    pytest.importorskip("av", reason="video support needs PyAV (the [video] extra)")
    from pixquery.catalog import Catalog
    from videos import make_video

    clip = make_video(setup.photos / "clip.mp4", [(2.0, 21)], fps=10, size=(160, 96))
    make_video(setup.outside / "private.mp4", [(2.0, 22)], fps=10, size=(160, 96))
    index_again(setup.lib_path, setup.model, [setup.photos])
    cat = Catalog(setup.lib_path / "catalog.sqlite")
    try:
        video_id = cat.db.execute("SELECT id FROM video WHERE path = ?", (str(clip),)).fetchone()[0]
    finally:
        cat.close()
    urls = [f"/api/videos/{video_id}/original", f"/api/videos/{video_id}/frame?t=0.5"]
    assert [api.get(u).status_code for u in urls] == [200, 200]
    for path in (
        "/api/videos/../../etc/passwd",
        "/api/videos/-1/original",
        "/api/videos/1.0/frame",
        "/api/videos/%2e%2e%2fetc%2fpasswd/original",
        f"/api/videos/{video_id}/frame?t=nan",
    ):
        status, body = _raw_get(setup, path)
        assert status in (404, 422) and _is_json_error(body, status), path
    saved = setup.outside / "clip-saved.mp4"
    clip.rename(saved)
    os.symlink(setup.outside / "private.mp4", clip)  # the video replaced by a link out of the library
    try:
        for u in urls:
            r = api.get(u)
            assert r.status_code == 404 and r.json() == {"error": f"no video with id {video_id}", "status": 404}
    finally:
        clip.unlink()
        saved.rename(clip)
    assert api.get(urls[0]).status_code == 200
    cat = Catalog(setup.lib_path / "catalog.sqlite")
    try:
        with cat.transaction():
            cat.db.execute("UPDATE video SET deleted = 1 WHERE id = ?", (video_id,))
    finally:
        cat.close()
    assert [api.get(u).status_code for u in urls] == [404, 404]
