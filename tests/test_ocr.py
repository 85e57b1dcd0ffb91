"""Text in photos (OCR): the catalog's text tables and trigram index, the text side of a query,
fusion, and `pixquery index --ocr` / `search` end to end with RapidOCR's real PP-OCRv6 weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from clirun import pixquery
from conftest import SHARED_DATA
from photos import photo
from pixquery.catalog import Catalog
from pixquery.catalog.text import fold
from pixquery.fusion import TEXT_WEIGHT, fuse

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def _font(size: int):
    return ImageFont.truetype(str(FONT), size) if FONT.exists() else ImageFont.load_default(size)


def background(n: int) -> Image.Image:
    """A real photo from ../shared/data when it is beside the checkout, else a synthetic one."""
    folder = SHARED_DATA / "imagenet-sample-images" / "images"
    if folder.is_dir():
        files = sorted(folder.iterdir())
        return Image.open(files[(n * 37) % len(files)]).convert("RGB").resize((500, 375))
    return photo((500, 375), seed=n)


def with_text(img: Image.Image, text: str, xy=(30, 40), size=40) -> tuple[Image.Image, tuple]:
    """`img` with `text` written on it (yellow, black outline); returns it and the text's relative box."""
    draw = ImageDraw.Draw(img)
    font = _font(size)
    draw.text(xy, text, font=font, fill=(255, 230, 0), stroke_width=2, stroke_fill=(0, 0, 0))
    x0, y0, x1, y1 = draw.textbbox(xy, text, font=font, stroke_width=2)
    return img, (x0 / img.width, y0 / img.height, x1 / img.width, y1 / img.height)


def overlap(a, b) -> float:
    """Intersection over union of two relative boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -- catalog: text tables and the trigram index ---------------------------------------------


def _catalog_with_text(tmp_path) -> tuple[Catalog, dict[str, int]]:
    cat = Catalog(tmp_path / "catalog.sqlite")
    ids = {}
    with cat.transaction():
        for name, lines in (("a", ["RE16 TGK", "Bäckerei Müller"]), ("b", ["SALE 50%", "GLASSES"]), ("c", [])):
            ids[name] = cat.upsert_image(f"/p/{name}.jpg", 10, 1, None, 100, 100)
            cat.replace_photo_text(
                ids[name],
                [(t, (0.1, 0.1 * i, 0.5, 0.1 * i + 0.1), 0.9) for i, t in enumerate(lines)],
                size=10,
                mtime_ns=1,
                config="cfg",
                seconds=0.1,
            )
    return cat, ids


def test_fold_drops_case_and_accents():
    assert fold("Bäckerei MÜLLER") == "backerei muller"
    assert fold("ＣＡＦÉ") == "cafe"  # full-width forms too


def test_substrings_are_found_in_any_case_and_without_accents(tmp_path):
    cat, ids = _catalog_with_text(tmp_path)
    assert [ln.image_id for ln in cat.lines_containing("re16")] == [ids["a"]]
    assert [ln.text for ln in cat.lines_containing(fold("MULLER"))] == ["Bäckerei Müller"]
    assert [ln.text for ln in cat.lines_containing("16 t")] == ["RE16 TGK"]  # across the space
    assert [ln.image_id for ln in cat.lines_containing("50%")] == [ids["b"]]  # LIKE's % is literal
    assert cat.lines_containing("0%") and not cat.lines_containing("x%")  # short needles scan
    assert cat.lines_containing("tgx") == []


def test_reading_again_replaces_a_photos_text_and_the_index_forgets_it(tmp_path):
    cat, ids = _catalog_with_text(tmp_path)
    with cat.transaction():
        cat.replace_photo_text(
            ids["a"], [("NEW SIGN", (0, 0, 1, 1), 0.8)], size=10, mtime_ns=1, config="cfg", seconds=0.1
        )
    assert cat.lines_containing("re16") == []
    assert [ln.text for ln in cat.lines_containing("sign")] == ["NEW SIGN"]
    assert cat.photos_to_read("cfg") == []
    assert {r[0] for r in cat.photos_to_read("other settings")} == set(ids.values())
    with cat.transaction():  # the file changed on disk: its text must be read again
        cat.upsert_image("/p/b.jpg", 12, 5, None, 100, 100)
    assert [r[0] for r in cat.photos_to_read("cfg")] == [ids["b"]]


def test_text_survives_region_purges_and_goes_with_its_photo(tmp_path):
    cat, ids = _catalog_with_text(tmp_path)
    with cat.transaction():
        assert cat.purge_orphan_detections() == 0  # text has no embedding, yet is not an orphan region
        cat.retire_detections(cat.photo_detection_ids())  # region settings changed: regions only
    assert cat.lines_containing("re16")
    assert cat.count_detections() == 0 and cat.count_photos_with_detections() == 0  # regions only
    assert cat.ocr_counts() == (3, 4)
    with cat.transaction():
        cat.mark_deleted([ids["a"]])
    assert cat.lines_containing("re16") == []  # a deleted photo is never a hit
    with cat.transaction():
        cat.purge_deleted()
    assert cat.db.execute("SELECT COUNT(*) FROM text_index").fetchone()[0] == 2  # the trigger dropped a's lines
    with cat.transaction():
        assert cat.drop_all_text() == 2
    assert cat.db.execute("SELECT COUNT(*) FROM text_index").fetchone()[0] == 0


# -- the text side of a query ---------------------------------------------------------------


def test_query_words_skip_common_and_short_words():
    from pixquery.text_search import query_words

    assert query_words("a dog on the Beach") == ["dog", "beach"]
    assert query_words("A4") == ["a4"]  # a lone short word is looked for anyway


@pytest.mark.ocr
def test_text_search_exact_substring_fuzzy_and_coverage(tmp_path):
    from pixquery.text_search import search_text

    cat, ids = _catalog_with_text(tmp_path)
    hit = search_text(cat, "RE16")[0]
    assert (hit.image_id, hit.score, hit.words) == (ids["a"], 1.0, {"re16": "exact"})
    assert [ln.text for ln in hit.lines] == ["RE16 TGK"]
    fuzzy = search_text(cat, "RE1G TGK")  # one misread character in "re16"
    assert [h.image_id for h in fuzzy] == [ids["a"]] and fuzzy[0].words == {"re1g": "fuzzy", "tgk": "exact"}
    assert 0.6 < fuzzy[0].score < 1.0
    assert search_text(cat, "mueller backerei")[0].image_id == ids["a"]  # 'mueller': one insertion
    assert search_text(cat, "RXYZ") == []  # two errors in four characters: no match
    code = search_text(cat, "RE16 TGX")  # 'tgx' is too short to match fuzzily alone: the run-together phrase does
    assert [h.image_id for h in code] == [ids["a"]] and code[0].score == pytest.approx(0.8)
    assert search_text(cat, "re16tgk")[0].score == 1.0  # a space lost in the query (or by the recogniser)
    assert search_text(cat, "sale on the red car") == []  # one word of three: below the coverage
    assert search_text(cat, "sale") and search_text(cat, "sale", fuzzy=False)
    assert search_text(cat, "sunglasses") == []  # a shorter word read is not a misreading of a longer one


@pytest.mark.ocr
def test_misreadings_counts_edits_against_the_best_piece_of_a_line():
    from pixquery.text_search import misreadings

    assert misreadings("re16", "re16tgk", 1) == 0
    assert misreadings("re16", "parked: rel6 tgk", 1) == 1
    assert misreadings("mamba", "rnamba", 1) == 1  # 'm' read as 'rn': one piece, 'namba', one edit
    assert misreadings("sunglasses", "glasses", 2) is None
    assert misreadings("understand", "and", 2) is None
    assert misreadings("welsh", "velsh corgi", 1) == 1 and misreadings("welsh", "vetsh", 1) is None


# -- fusion ---------------------------------------------------------------------------------


def test_fusion_puts_a_full_text_match_first_and_rewards_both_lists():
    semantic = [(k, 1.0) for k in "abcdefgh"]
    fused = fuse({"semantic": semantic, "text": [("x", 1.0), ("c", 1.0)]}, weights={"text": TEXT_WEIGHT})
    order = [f.key for f in fused]
    assert order[:2] == ["c", "x"]  # in both lists, then text rank 1 before semantic rank 1
    assert order.index("x") < order.index("a")
    assert fused[0].ranks == {"semantic": 3, "text": 2}
    # a weak (partial) text match does not jump a strong semantic hit
    weak = fuse({"semantic": semantic, "text": [("x", 0.3)]}, weights={"text": TEXT_WEIGHT})
    assert [f.key for f in weak].index("x") > 0
    plain = fuse({"semantic": semantic, "text": [("x", 1.0)]})  # plain RRF: a tie, semantic listed first
    assert [f.key for f in plain][:2] == ["a", "x"]


# -- end to end: the real command, real OCR weights -----------------------------------------


@pytest.mark.ocr
def test_index_ocr_then_search_finds_the_plate_at_rank_one(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    photos.mkdir()
    plate, plate_box = with_text(background(0), "RE16 TGK")
    plate.save(photos / "car.jpg", quality=92)
    with_text(background(1), "SALE 50%", xy=(40, 200))[0].save(photos / "shop.jpg", quality=92)
    for n in range(2, 6):
        background(n).save(photos / f"plain{n}.jpg", quality=92)
    lib = tmp_path / "lib"

    r = pixquery("index", photos, "-L", lib, "-m", tiny_model, "--ocr")
    assert r.returncode == 0, r.stderr
    assert "text: read 6 photos" in r.stdout

    r = pixquery("search", "RE16", "-L", lib, "-m", tiny_model)  # piped: tab-separated lines
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0].split("\t")
    assert first[3] == str(photos / "car.jpg")
    assert "RE16" in first[4].replace(" ", "") and "[box " in first[4]  # the words that matched, and where

    r = pixquery("search", "RE16", "-L", lib, "-m", tiny_model, "--json", "-k", "3")
    top = json.loads(r.stdout)["results"][0]
    assert top["path"] == str(photos / "car.jpg") and "text" in top["found_by"].split("+")
    assert overlap(top["matched"][0]["box"], plate_box) > 0.5
    assert 0.5 < top["matched"][0]["score"] <= 1.0

    # a combined query (pixquery.query): the text side looks for the words of the parts added only
    r = pixquery("search", "RE16 -people", "-L", lib, "-m", tiny_model, "--add", "TGK", "--json")
    top = json.loads(r.stdout)["results"][0]
    assert top["path"] == str(photos / "car.jpg") and top["matched"]

    r = pixquery("search", "50%", "-L", lib, "-m", tiny_model, "--text-only", "--json")
    assert [Path(x["path"]).name for x in json.loads(r.stdout)["results"]] == ["shop.jpg"]
    r = pixquery("search", "RE16", "-L", lib, "-m", tiny_model, "--semantic-only", "--json", "-k", "6")
    assert all("matched" not in x for x in json.loads(r.stdout)["results"])

    # remembered: a plain run reads only what changed; the changed photo loses its old text
    background(0).save(photos / "car.jpg", quality=90)
    os.utime(photos / "car.jpg", ns=(1, 1))
    r = pixquery("index", "-L", lib, "-m", tiny_model, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text_photos"] == 1
    r = pixquery("search", "RE16", "-L", lib, "-m", tiny_model, "--text-only", "--json")
    assert json.loads(r.stdout)["results"] == []

    r = pixquery("index", "-L", lib, "-m", tiny_model, "--no-ocr")
    assert r.returncode == 0, r.stderr
    r = pixquery("search", "sale", "-L", lib, "-m", tiny_model, "--text-only")
    assert r.returncode == 2 and "run pixquery index --ocr" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.ocr
def test_http_search_says_which_text_matched_and_where(tmp_path, tiny_model):
    from pixquery.api import Library
    from test_server_support import running_server

    photos = tmp_path / "photos"
    photos.mkdir()
    sign, sign_box = with_text(background(3), "Bäckerei", xy=(60, 120), size=44)
    sign.save(photos / "bakery.jpg", quality=92)
    for n in range(4, 8):
        background(n).save(photos / f"plain{n}.jpg", quality=92)
    lib_path = tmp_path / "library"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        lib.index([str(photos)], workers=1, ocr=True)
    with running_server(lib_path, tiny_model, tmp_path / "server.log") as server, server.client() as api:
        hits = api.get("/api/search", params={"q": "BACKEREI"}).json()["results"]  # case and accent folded
        assert hits[0]["name"] == "bakery.jpg" and "text" in hits[0]["found_by"]
        assert overlap(hits[0]["matched"][0]["box"], sign_box) > 0.5
        assert all(h["matched"] is None for h in hits[1:])
        text = api.get("/api/search", params={"q": "ckere", "match": "text"}).json()["results"]
        assert [h["name"] for h in text] == ["bakery.jpg"]
        semantic = api.get("/api/search", params={"q": "backerei", "match": "semantic"}).json()["results"]
        assert len(semantic) == 5 and all(h["matched"] is None for h in semantic)
        r = api.get("/api/search", params={"q": "x", "match": "both or neither"})
        assert r.status_code == 422


@pytest.mark.ocr
def test_the_viewer_outlines_the_words_that_matched(tmp_path, tiny_model):
    from pixquery.api import Library
    from test_browser import chromium, opened_page
    from test_server_support import TOKEN, running_server

    photos = tmp_path / "photos"
    photos.mkdir()
    sign, sign_box = with_text(background(3), "Bäckerei", xy=(60, 120), size=44)
    sign.save(photos / "bakery.jpg", quality=92)
    for n in range(4, 7):
        background(n).save(photos / f"plain{n}.jpg", quality=92)
    lib_path = tmp_path / "library"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        lib.index([str(photos)], workers=1, ocr=True)
    # no folding of near-duplicates on the page: the tiny random model puts these plain backgrounds
    # closer than the default threshold (meant for real CLIP)
    with (
        running_server(lib_path, tiny_model, tmp_path / "server.log", extra=("--duplicate-threshold", "0")) as server,
        chromium() as browser,
        opened_page(browser) as page,
    ):
        page.goto(f"{server.url}/?token={TOKEN}")
        page.fill("#q", "backerei")
        page.press("#q", "Enter")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 4")
        page.locator("#grid .tile").first.click()
        page.wait_for_selector("#viewer[open]")
        assert page.inner_text("#v-name") == "bakery.jpg"
        assert "ckerei" in page.inner_text("#v-text")  # as read: "Bäckerei" (or "Backerei")
        page.wait_for_function(
            "() => { const i = document.getElementById('v-img'); return i.complete && i.naturalWidth > 0; }"
        )
        img = page.locator("#v-img").bounding_box()
        box = page.locator("#v-text-boxes .text-box").first.bounding_box()
        shown = (
            (box["x"] - img["x"]) / img["width"],
            (box["y"] - img["y"]) / img["height"],
            (box["x"] + box["width"] - img["x"]) / img["width"],
            (box["y"] + box["height"] - img["y"]) / img["height"],
        )
        assert overlap(shown, sign_box) > 0.4, (shown, sign_box)
        page.keyboard.press("ArrowRight")  # the next result matched by meaning only: no outline, no text
        page.wait_for_function("() => document.getElementById('v-name').textContent !== 'bakery.jpg'")
        assert page.locator("#v-text-boxes .text-box").count() == 0 and page.is_hidden("#v-text")
        assert not page.problems, page.problems


@pytest.mark.ocr
def test_the_decode_workers_read_text_from_the_pixels_they_decoded(tmp_path):
    """A photo's text is read in its decode worker: detection on the draft-decoded pixels, and
    recognition (only where detection found boxes) from a bigger decode of the same bytes."""
    from pixquery.encoders.base import PreprocessConfig
    from pixquery.ingest.items import DecodeSettings, MediaItem
    from pixquery.ingest.ocr import OcrConfig
    from pixquery.ingest.workers import decode_photo

    big = background(0).resize((2000, 1500))  # JPEG draft decodes it at 1/2 or less for the crops
    big, box = with_text(big, "RE16 TGK", xy=(200, 300), size=120)
    big.save(tmp_path / "car.jpg", quality=92)
    background(1).resize((2000, 1500)).save(tmp_path / "plain.jpg", quality=92)
    settings = DecodeSettings(PreprocessConfig(), ocr=OcrConfig().resolved())

    def item(name, read_text=True):
        path = str(tmp_path / name)
        return MediaItem(path, os.path.getsize(path), 0, read_text=read_text)

    piece = decode_photo(item("car.jpg"), settings)
    assert piece.failure is None and piece.pixels is not None and (piece.width, piece.height) == (2000, 1500)
    assert [b.text.replace(" ", "") for b in piece.text] == ["RE16TGK"]
    assert overlap(piece.text[0].box, box) > 0.5 and piece.text_seconds > 0
    assert decode_photo(item("plain.jpg"), settings).text == []  # read: no text in it
    assert decode_photo(item("car.jpg", read_text=False), settings).text is None  # not asked to read it


@pytest.mark.ocr
def test_index_reads_text_in_the_decode_workers_and_the_ocr_pass_only_what_was_not_decoded(
    tmp_path, tiny_model, monkeypatch
):
    from pixquery.api import Library
    from pixquery.ingest import ocr as ocr_mod

    photos = tmp_path / "photos"
    photos.mkdir()
    with_text(background(0), "RE16 TGK")[0].save(photos / "car.jpg", quality=92)
    for n in range(1, 4):
        background(n).save(photos / f"plain{n}.jpg", quality=92)

    def no_pass(*args, **kwargs):  # the pass after the run runs in this process; the workers do not
        raise AssertionError("the OCR pass read a photo that a decode worker had decoded")

    with monkeypatch.context() as m:
        m.setattr(ocr_mod, "TextReader", no_pass)
        lib = Library.open(tmp_path / "lib", model=str(tiny_model))
        report = lib.index([photos], ocr=True)
    assert report.failed == [] and report.indexed == 4
    assert (report.text_photos, report.text_lines) == (4, 1)
    hits = lib.search("RE16", k=1, text_only=True)
    assert [Path(h.path).name for h in hits] == ["car.jpg"]
    lib.close()

    # OCR turned on for photos indexed before: nothing to decode, so the pass after reads them
    other = Library.open(tmp_path / "lib2", model=str(tiny_model))
    assert other.index([photos]).text_photos == 0
    report = other.index([photos], ocr=True)
    assert report.indexed == 0 and (report.text_photos, report.text_lines) == (4, 1)
    assert [Path(h.path).name for h in other.search("TGK", k=1, text_only=True)] == ["car.jpg"]
    other.close()


# -- the engine and its settings ----------------------------------------------------------


def test_boxes_are_lengthened_along_their_line_and_kept_in_the_picture():
    import numpy as np

    from pixquery.ingest.ocr import _lengthened

    flat = np.array([[[100, 50], [200, 50], [200, 70], [100, 70]]], np.float32)  # 20 px tall
    out = _lengthened(flat.copy(), 1.0, 1000, 1000)
    assert np.allclose(out[0], [[80, 50], [220, 50], [220, 70], [80, 70]])  # 20 px more at each end
    tilted = np.array([[[100, 100], [180, 160], [168, 176], [88, 116]]], np.float32)  # 20 px tall, along (0.8, 0.6)
    out = _lengthened(tilted.copy(), 1.0, 1000, 1000)
    assert np.allclose(out[0, 0], [84, 88], atol=0.01) and np.allclose(out[0, 1], [196, 172], atol=0.01)
    edge = _lengthened(np.array([[[5, 5], [50, 5], [50, 25], [5, 25]]], np.float32), 1.0, 60, 60)
    assert edge[..., 0].min() == 0 and edge[..., 0].max() == 59  # clipped to the picture


def test_recognition_decodes_again_only_when_the_smallest_box_is_too_small():
    import numpy as np

    from pixquery.ingest.ocr import REC_TEXT_PX, OcrConfig, TextReader

    reader = TextReader.__new__(TextReader)  # the sizing needs no engine loaded
    reader.config = OcrConfig()

    def quad(x0, y0, x1, y1):
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]

    size = (500, 375)  # a 4000x3000 photo decoded at 1/8 for its crops and detection
    tall = np.array([quad(0.1, 0.1, 0.6, 0.3)], np.float32)  # 75 px tall in it: read from it
    assert reader.recognition_short_side(tall, size, 4000) <= 375
    small = np.array([quad(0.1, 0.1, 0.6, 0.3), quad(0.1, 0.5, 0.3, 0.55)], np.float32)  # 18.75 px tall
    short = reader.recognition_short_side(small, size, 4000)
    assert short == round(375 * REC_TEXT_PX / 18.75) == 960  # the smallest box REC_TEXT_PX tall
    tiny = np.array([quad(0.1, 0.5, 0.3, 0.501)], np.float32)
    assert reader.recognition_short_side(tiny, size, 4000) == 1500  # at most rec_side (2000) long
    assert reader.recognition_short_side(tiny, size, 800) == 600  # never above the photo's own size


def test_a_library_read_with_an_engine_no_longer_installed_switches_to_the_current_one(tmp_path, monkeypatch):
    from dataclasses import replace

    from pixquery.ingest import ocr as ocr_mod

    cat = Catalog(tmp_path / "catalog.sqlite")
    old = replace(ocr_mod.OcrConfig(), engine="rapidocr-onnxruntime==1.4.4", extend=0.0)
    ocr_mod.apply_config(cat, old)
    monkeypatch.setattr(ocr_mod, "engine_installed", lambda engine: True)
    assert ocr_mod.choose_config(cat, None) == old  # installed: the library keeps what it was read with
    monkeypatch.setattr(ocr_mod, "engine_installed", lambda engine: not engine.startswith("rapidocr-onnxruntime"))
    for enabled in (None, True):
        chosen = ocr_mod.choose_config(cat, enabled)
        assert chosen.engine == ocr_mod.ENGINE and chosen.extend == 0.0 and chosen.det_side == old.det_side
    assert ocr_mod.choose_config(cat, False) is None
    cat.close()
