"""Phone and camera formats: HEIC/HEIF (pillow-heif), AVIF (Pillow's own), camera RAW (rawpy:
LibRaw) decode with their orientation, go through the same index run as JPEG, are found by
search, and a format whose plugin is missing is reported once per run with the install command."""

from __future__ import annotations

import io
import json
import os
import textwrap

import numpy as np
import pytest
from PIL import Image

from clirun import pixquery
from photo_formats import avif, dng, heic, solid
from photos import make_photos, photo
from pixquery.errors import BadImage
from pixquery.ingest import formats
from pixquery.ingest.decode import load

RED, BLUE = (220, 30, 30), (30, 30, 220)


def _mean(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float32).reshape(-1, 3).mean(0)


# -- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [heic, avif], ids=["heic", "avif"])
def test_heic_and_avif_decode_upright_with_their_size(tmp_path, writer):
    # stored landscape 400x300, left half red; orientation 6 shows it portrait, red on top
    img = solid((400, 300), BLUE)
    img.paste(solid((200, 300), RED), (0, 0))
    path = writer(tmp_path / f"rotated.{writer.__name__}", img, orientation=6)
    out, w, h = load(str(path), 224)
    assert (w, h) == (300, 400) and out.size == (300, 400)
    top, bottom = _mean(out.crop((0, 0, 300, 150))), _mean(out.crop((0, 250, 300, 400)))
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # red above, blue below
    plain = writer(tmp_path / f"plain.{writer.__name__}", photo((320, 240), seed=3))
    out, w, h = load(io.BytesIO(plain.read_bytes()), None, name="upload")  # by content, no file name
    assert (w, h) == (320, 240) and out.mode == "RGB"
    assert np.abs(_mean(out) - _mean(photo((320, 240), seed=3))).max() < 12  # the same picture


def test_a_heic_thumbnail_large_enough_is_decoded_instead_of_the_picture(tmp_path):
    """HEIC's draft: pillow-heif decodes the embedded thumbnail (as phones store one) when both
    its sides are >= what the crops need; the photo's own size is still the picture's."""
    path = heic(tmp_path / "t.heic", photo((1200, 900), seed=5), orientation=6, thumbnail=320)
    out, w, h = load(str(path), 224)
    assert (w, h) == (900, 1200) and out.size == (240, 320)  # the thumbnail, turned upright
    out, w, h = load(str(path), 300)  # the thumbnail's 240 is too small: the picture itself
    assert (w, h) == (900, 1200) and out.size == (900, 1200)
    full, _, _ = load(str(path), None)
    small = np.asarray(full.resize((240, 320), Image.Resampling.BOX), np.float32)
    assert np.abs(np.asarray(load(str(path), 224)[0], np.float32) - small).mean() < 8  # the same picture


@pytest.mark.formats
def test_dng_embedded_preview_is_used_when_large_enough(tmp_path):
    """The sensor data is red, the preview blue: the colour says which one was decoded."""
    path = dng(tmp_path / "p.dng", solid((400, 300), RED), preview=solid((400, 300), BLUE))
    out, w, h = load(str(path), 224)  # the crops need 224: the 400x300 preview is enough
    assert (w, h) == (400, 300) and _mean(out)[2] > 150 > _mean(out)[0]
    out, w, h = load(str(path), 350)  # needs more than the preview: demosaiced (at full size)
    assert out.size == (400, 300) and _mean(out)[0] > 150 > _mean(out)[2]
    out, _, _ = load(str(path), None)  # no draft: the full demosaic
    assert out.size == (400, 300) and _mean(out)[0] > 150 > _mean(out)[2]
    # uncompressed previews (Android's DNGs) too
    path = dng(tmp_path / "bitmap.dng", solid((400, 300), RED), preview=solid((400, 300), BLUE), preview_jpeg=False)
    out, _, _ = load(str(path), 224)
    assert _mean(out)[2] > 150 > _mean(out)[0]
    # a preview of another shape (letterboxed 16:9) is not trusted
    path = dng(tmp_path / "wide.dng", solid((400, 300), RED), preview=solid((400, 226), BLUE))
    out, _, _ = load(str(path), 100)
    assert _mean(out)[0] > 150 > _mean(out)[2]


@pytest.mark.formats
def test_dng_half_size_demosaic_and_orientation(tmp_path):
    img = solid((400, 300), BLUE)
    img.paste(solid((200, 300), RED), (0, 0))  # left half red
    path = dng(tmp_path / "rot.dng", img, orientation=6)  # no preview: demosaic
    out, w, h = load(str(path), 100)  # 150 >= 100: half size is enough
    assert (w, h) == (300, 400) and out.size == (150, 200)
    top, bottom = _mean(out.crop((0, 0, 150, 80))), _mean(out.crop((0, 120, 150, 200)))
    assert top[0] > top[2] and bottom[2] > bottom[0]  # turned as the camera said: red on top
    path = dng(tmp_path / "rotp.dng", img, orientation=6, preview=img)  # the preview is turned too
    out, w, h = load(str(path), 224)
    assert (w, h) == (300, 400) and out.size == (300, 400)
    assert _mean(out.crop((0, 0, 300, 150)))[0] > 150 > _mean(out.crop((0, 250, 300, 400)))[0]
    # a DNG sent without its name (an upload, a server thumbnail) is known by its DNG tag
    out, w, h = load(io.BytesIO(path.read_bytes()), 224, name="upload")
    assert (w, h) == (300, 400)


@pytest.mark.formats
def test_bad_raw_and_heic_files_name_the_file_and_reason(tmp_path):
    good = dng(tmp_path / "good.dng")
    cases = {"empty.dng": b"", "junk.nef": os.urandom(5000), "cut.dng": good.read_bytes()[:300]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImage) as e:
            load(str(tmp_path / name), 224)
        assert e.value.path == str(tmp_path / name) and e.value.reason
    data = heic(tmp_path / "h.heic").read_bytes()
    (tmp_path / "cut.heic").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage) as e:
        load(str(tmp_path / "cut.heic"), 224)
    assert e.value.path.endswith("cut.heic")
    with pytest.raises(BadImage, match="pixel limit"):
        from pixquery.ingest.decode import _load

        _load(str(good), 224, 1000, None)  # the size guard holds for RAW too


def test_every_format_is_found_by_the_scan():
    from pixquery.ingest.scan import IMAGE_EXTENSIONS

    for ext in (".heic", ".heif", ".avif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"):
        assert ext in IMAGE_EXTENSIONS and formats.format_of("x" + ext.upper()) is not None


# -- the index run ----------------------------------------------------------------------------


def _mixed_folder(root):
    from videos import make_video

    make_photos(root, 2)
    files = [
        heic(root / "phone.heic", seed=11),
        avif(root / "web.avif", seed=12),
        dng(root / "camera.dng", seed=13, preview=photo((400, 300), seed=13)),
        dng(root / "android.dng", seed=14),
    ]  # no preview: demosaiced
    make_video(root / "clip.mp4", [(1.0, 5)])
    return files


@pytest.mark.formats
def test_a_mixed_folder_indexes_without_a_skipped_file_and_each_is_found(tmp_path, tiny_model):
    root = tmp_path / "photos"
    files = _mixed_folder(root)
    lib = tmp_path / "lib"
    r = pixquery("index", root, "-L", lib, "-m", tiny_model, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["failed"] == [] and rep["missing_plugins"] == []
    assert rep["found"] == 7 and rep["indexed"] == 7 and rep["videos"] == 1
    for f in files:  # each file is its own nearest neighbour: it is in the index, with its own pixels
        r = pixquery("search", "--image", f, "-L", lib, "-k", "1", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["results"][0]["path"] == str(f)
    r = pixquery("search", "a photo", "-L", lib, "-k", "20", "--json")
    found = {x["path"] for x in json.loads(r.stdout)["results"]}
    assert {str(f) for f in files} <= found and str(root / "clip.mp4") in found


BLOCK_PLUGINS = """
# Written by tests/test_formats.py: makes `import pillow_heif` and `import rawpy` fail in every
# Python process started with this folder on PYTHONPATH (the CLI and its decode workers), as
# on a machine where those packages are not installed. Nothing else is changed.
import sys
sys.modules["pillow_heif"] = None
sys.modules["rawpy"] = None
"""


def test_a_missing_plugin_is_reported_once_with_the_install_command(tmp_path, tiny_model):
    """pillow-heif and rawpy made unimportable by a sitecustomize (see BLOCK_PLUGINS): HEIC and
    DNG files are counted and reported, one line per format, JPEG and AVIF are indexed. (A real
    install without rawpy is checked by tests/test_plain_install.py.)"""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(textwrap.dedent(BLOCK_PLUGINS))
    env = {"PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])}
    root = tmp_path / "photos"
    make_photos(root, 2)
    for i in range(3):
        heic(root / f"iphone_{i}.heic", seed=20 + i)
    avif(root / "web.avif", seed=30)
    (root / "camera.dng").write_bytes(b"II*\x00" + os.urandom(2000))  # never opened: rawpy is missing
    (root / "camera.nef").write_bytes(b"II*\x00" + os.urandom(2000))
    lib = tmp_path / "lib"
    r = pixquery("index", root, "-L", lib, "-m", tiny_model, env=env)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out  # new failures: the library is not complete
    assert "indexed 3" in r.stdout  # 2 JPEG + the AVIF
    assert out.count("HEIC/HEIF files not indexed") == 1 and out.count("camera RAW files not indexed") == 1, out
    assert "3 HEIC/HEIF files not indexed" in out and "2 camera RAW files not indexed" in out
    assert "pillow-heif is not installed: pip install 'pixquery[formats]'" in out
    assert "rawpy is not installed: pip install 'pixquery[formats]'" in out
    assert "iphone_1.heic" not in out  # one line per format, not one per file
    assert "Traceback" not in out
    r = pixquery("index", "-L", lib, "--json", env=env)  # the next run says it again (exit 0: nothing new)
    rep = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    assert {m["format"]: m["files"] for m in rep["missing_plugins"]} == {"HEIC/HEIF": 3, "camera RAW": 2}
    assert len([f for f in rep["failed"] if "pip install 'pixquery[formats]'" in f["reason"]]) == 5
    # a query image of that format says the same, in one line
    r = pixquery("search", "--image", root / "iphone_0.heic", "-L", lib, env=env)
    assert r.returncode != 0 and "pillow-heif is not installed" in r.stderr and "Traceback" not in r.stderr
    # with the plugins back the same files are indexed
    r = pixquery("index", "-L", lib, "--json")
    rep = json.loads(r.stdout)
    assert rep["indexed"] == 3  # the HEICs
    if not isinstance(formats.rawpy_module(), str):  # the fake RAWs now reach LibRaw, which refuses them
        assert rep["missing_plugins"] == []
        assert {os.path.basename(f["path"]) for f in rep["failed"]} == {"camera.dng", "camera.nef"}


@pytest.mark.formats
def test_a_raw_decoder_that_crashes_costs_only_its_file(tmp_path, tiny_model):
    """RAW and HEIC decode in the same worker processes as JPEG: a LibRaw crash (simulated with
    kill -9 of the worker at that file, PIXQUERY_FAILPOINT) fails that file, the rest index."""
    root = tmp_path / "photos"
    make_photos(root, 2)
    heic(root / "phone.heic", seed=3)
    dng(root / "fine.dng", seed=4)
    dng(root / "crash.dng", seed=5)
    r = pixquery(
        "index",
        root,
        "-L",
        tmp_path / "lib",
        "-m",
        tiny_model,
        "--json",
        env={"PIXQUERY_FAILPOINT": "decode_worker/crash.dng"},
    )
    assert r.returncode == 1, r.stderr
    rep = json.loads(r.stdout)
    assert [os.path.basename(f["path"]) for f in rep["failed"]] == ["crash.dng"]
    assert "died" in rep["failed"][0]["reason"] and rep["indexed"] == 4


@pytest.mark.formats
def test_the_server_makes_thumbnails_of_heic_and_raw(tmp_path):
    """The search page shows these formats through thumbnails (a browser shows neither)."""
    from pixquery.server.thumbnails import Thumbnails

    thumbs = Thumbnails(tmp_path / "thumbs")
    cases = [
        heic(tmp_path / "p.heic", photo((400, 300), seed=1), orientation=6),
        dng(tmp_path / "p.nef", photo((400, 300), seed=2), orientation=6, preview=photo((400, 300), seed=2)),
    ]
    for i, path in enumerate(cases):
        with open(path, "rb") as f:
            data, _ = thumbs.get(i, f, os.stat(path), 256, name=str(path))
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.size == (192, 256)  # upright, long side 256
