"""The server survives hostile files and clients: a folder swapped for a link between the check and
the open, clients asking for a video frame at every millisecond, a file that kills the decoder.

Real `pixquery serve` processes on 127.0.0.1 (tests/test_server_support.py), real files, real
symbolic links; the decoder crash is the project's failpoint (pixquery._failpoints: the worker
kills itself with SIGKILL on that file, as a codec's segfault would end it).
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from photos import make_photos, photo
from test_server_support import build_library, running_server


def _catalog(lib_path: Path):
    from pixquery.catalog import Catalog

    return Catalog(lib_path / "catalog.sqlite")


def _image_id(lib_path: Path, path: Path) -> int:
    cat = _catalog(lib_path)
    try:
        return cat.image_by_path(str(path)).id
    finally:
        cat.close()


@pytest.fixture(scope="module")
def swap_library(tmp_path_factory, tiny_model):
    """photos/album/a.jpg indexed; outside/album/a.jpg (same name, another picture) is the secret."""
    root = tmp_path_factory.mktemp("swap")
    photos = root / "photos"
    make_photos(photos / "album", 3)
    outside = root / "outside" / "album"
    outside.mkdir(parents=True)
    photo(seed=999).save(outside / "photo_0000.jpg")
    lib_path = root / "library"
    from pixquery.api import Library

    with Library.open(lib_path, model=str(tiny_model)) as lib:
        lib.index([str(photos)], workers=1)
    return root, lib_path, photos, outside


def test_folder_swapped_between_check_and_open_is_refused(swap_library):
    """The race O_NOFOLLOW leaves open, made to happen: the path is checked while the folder is
    real, the folder becomes a link out of the library, then the open. The opened file's real
    path gives it away."""
    from pixquery.server import files

    root, lib_path, photos, outside = swap_library
    target = photos / "album" / "photo_0000.jpg"
    cat = _catalog(lib_path)
    try:
        row = files.image_row(cat, _image_id(lib_path, target))
        real = files.check_path(cat, row.path)
        assert real == str(target.resolve())
        with files.open_checked(row, real) as opened:  # nothing swapped: served
            assert opened.file.read() == target.read_bytes()
        os.rename(photos / "album", photos / "album.real")
        os.symlink(outside, photos / "album")
        try:
            with pytest.raises(files.NotServable, match="a folder on the path changed"):
                files.open_checked(row, real)
        finally:
            os.unlink(photos / "album")
            os.rename(photos / "album.real", photos / "album")
    finally:
        cat.close()


def test_folder_swapped_back_and_forth_during_requests_never_leaks(swap_library, tiny_model):
    """A real swap attack on a running server: a thread swaps the photo's folder with a link to a
    folder outside the library as fast as it can while a client asks for the photo. Every answer
    is the photo itself or a 404, never the file outside."""
    root, lib_path, photos, outside = swap_library
    target = photos / "album" / "photo_0000.jpg"
    image_id = _image_id(lib_path, target)
    good, secret = target.read_bytes(), (outside / "photo_0000.jpg").read_bytes()
    stop = threading.Event()
    swaps = 0

    def swapper():
        nonlocal swaps
        while not stop.is_set():
            os.rename(photos / "album", photos / "album.real")
            os.symlink(outside, photos / "album")
            os.unlink(photos / "album")
            os.rename(photos / "album.real", photos / "album")
            swaps += 1

    with running_server(lib_path, tiny_model, root / "server.log") as server, server.client() as api:
        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        statuses = {}
        try:
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                r = api.get(f"/api/images/{image_id}/original")
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code in (200, 404), r.text
                if r.status_code == 200:
                    assert r.content == good and r.content != secret
        finally:
            stop.set()
            thread.join(10)
        assert swaps > 100 and sum(statuses.values()) > 50, (swaps, statuses)
        assert api.get(f"/api/images/{image_id}/original").content == good  # swapped back: served again


@pytest.fixture(scope="module")
def video_server(tmp_path_factory, tiny_model):
    pytest.importorskip("av")
    from videos import make_video

    root = tmp_path_factory.mktemp("frames")
    photos = root / "photos"
    photos.mkdir()
    make_video(photos / "clip.mp4", [(3.0, 11), (3.0, 12)], fps=10, size=(160, 96))
    lib_path, photos = build_library(root, tiny_model, 2)
    with running_server(lib_path, tiny_model, root / "server.log") as server:
        server.lib_path = lib_path
        yield server


def test_frame_cache_stays_bounded_whatever_t_clients_ask(video_server):
    """One JPEG per frame the index stored (and size), not one per millisecond asked for."""
    cat = _catalog(video_server.lib_path)
    try:
        (video_id,) = [v for v in range(1, 10) if cat.video(v) is not None]
        stored = {
            r[0] for r in cat.db.execute("SELECT DISTINCT timestamp FROM detection WHERE video_id = ?", (video_id,))
        }
    finally:
        cat.close()
    assert 2 <= len(stored) < 50
    frames = video_server.lib_path / "thumbnails" / "videos"
    with video_server.client() as api:
        etags = set()
        for i in range(300):  # 0.000 .. 5.980 s, a distinct t each time
            r = api.get(f"/api/videos/{video_id}/frame", params={"t": f"{i * 0.02:.3f}"})
            assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "JPEG"
            etags.add(r.headers["etag"])
        far = api.get(f"/api/videos/{video_id}/frame", params={"t": "9999999"})  # past the end: the last stored frame
        assert far.status_code == 200 and far.headers["etag"] in etags
    cached = [p for p in frames.rglob("*.jpg")]
    assert 1 <= len(cached) <= len(stored), (len(cached), sorted(stored))
    assert len(etags) == len(cached)


def test_a_file_that_kills_the_decoder_costs_one_error_not_the_server(tmp_path, tiny_model, monkeypatch):
    root = tmp_path
    lib_path, photos = build_library(root, tiny_model, 4)
    bad = _image_id(lib_path, photos / "photo_0002.jpg")
    good = _image_id(lib_path, photos / "photo_0003.jpg")
    # The decode worker SIGKILLs itself whenever it gets to photo_0002.jpg (the server process
    # itself never reaches that point: it does not decode).
    monkeypatch.setenv("PIXQUERY_FAILPOINT", "thumbnail_worker/photo_0002.jpg")
    with running_server(lib_path, tiny_model, root / "server.log") as server, server.client() as api:
        r = api.get(f"/api/images/{bad}/thumbnail")
        assert r.status_code == 422 and r.json() == {
            "error": "cannot make a thumbnail: the decoder crashed on this file",
            "status": 422,
        }
        ok = api.get(f"/api/images/{good}/thumbnail")
        assert ok.status_code == 200 and Image.open(io.BytesIO(ok.content)).size == (256, 192)
        assert api.get(f"/api/images/{bad}/thumbnail").status_code == 422  # again: still an answer
        assert api.get(f"/api/images/{good}/thumbnail", params={"size": 1024}).status_code == 200
        assert api.get("/api/health").json()["status"] == "ok"
        assert api.get("/api/search", params={"q": "a photo"}).status_code == 200
        assert api.get(f"/api/images/{bad}/original").content == (photos / "photo_0002.jpg").read_bytes()
        assert server.proc.poll() is None
    assert "decode worker died" in server.log()
