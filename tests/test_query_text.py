"""Combined queries meet the text in photos (OCR): a subtracted phrase leaves out the photos whose
text holds it ("invoice -draft"), and near-duplicates fold in text-only and fused results too.

Most tests run on a real library (the tiny random-weight model, real SQLite and its trigram text
index) whose text rows are stored through the catalog, as ingest/ocr.py stores what it reads, so
what each photo "says" is known exactly; the last test reads the text with RapidOCR's real
PP-OCRv6 weights through the real `pixquery index --ocr` and `pixquery search` commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clirun import pixquery
from photos import make_photos
from pixquery.api import Library
from pixquery.catalog import Catalog
from pixquery.errors import PixqueryError
from pixquery.query import Query, combine
from pixquery.search import angular_distance
from pixquery.text_search import holding_phrases

NO_DAEMON = {"PIXQUERY_NO_DAEMON": "1"}

# What each photo of the library "says": file name -> its lines of text.
TEXT = {
    "photo_0000.jpg": ["INVOICE 2024"],
    "copy_0000.jpg": ["INVOICE 2024"],  # a resized copy of photo_0000: a near-duplicate
    "photo_0001.jpg": ["INVOICE 2024", "DRAFT"],
    "photo_0002.jpg": ["Drafts folder"],  # no "invoice": found by meaning only, if at all
    "photo_0003.jpg": ["Redraft", "CRAFT BEER", "invoice"],  # neither is the word "draft"
}


def store_text(catalog: Catalog, image_id: int, lines: list[str]) -> None:
    catalog.replace_photo_text(
        image_id,
        [(t, (0.1, 0.1 * i, 0.6, 0.1 * i + 0.1), 0.9) for i, t in enumerate(lines)],
        size=1,
        mtime_ns=1,
        config="test",
        seconds=0.0,
    )


@pytest.fixture(scope="module")
def texted(tmp_path_factory, tiny_model):
    """(library, photos folder, name -> image id, near-duplicate threshold): 9 photos indexed with
    the tiny model, OCR on, the TEXT above stored as their text."""
    from pixquery.catalog.text import SETTING_OCR
    from pixquery.ingest.ocr import OcrConfig

    root = tmp_path_factory.mktemp("query-text")
    photos = root / "photos"
    make_photos(photos, 8)
    original = Image.open(photos / "photo_0000.jpg")
    original.resize((original.width * 3 // 4, original.height * 3 // 4), Image.LANCZOS).save(
        photos / "copy_0000.jpg", quality=80
    )
    lib_path = root / "lib"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        lib.index([photos], workers=1)
        ids = {p.name: lib.catalog.image_by_path(str(p)).id for p in sorted(photos.iterdir())}
        with lib.catalog.transaction():
            lib.catalog.set_setting(SETTING_OCR, OcrConfig().to_json())
            for name, lines in TEXT.items():
                store_text(lib.catalog, ids[name], lines)
        threshold = _calibrate(lib, ids)
    return lib_path, photos, ids, threshold


def _calibrate(lib: Library, ids: dict[str, int]) -> float:
    """Midway between the copy's distance to its original and the nearest two different photos
    (the tiny model's distances are not CLIP's: docs/duplicates.md)."""
    model = lib.catalog.model_by_fingerprint(lib.encoder.fingerprint)
    vectors = lib.catalog.photo_vectors(model.id, list(ids.values()))
    names = sorted(ids)
    pair = angular_distance(float(vectors[ids["photo_0000.jpg"]] @ vectors[ids["copy_0000.jpg"]]))
    others = [
        angular_distance(float(vectors[ids[a]] @ vectors[ids[b]]))
        for n, a in enumerate(names)
        for b in names[n + 1 :]
        if {a, b} != {"photo_0000.jpg", "copy_0000.jpg"}
    ]
    assert pair < min(others), f"the tiny model does not separate the copy: {pair} vs {min(others)}"
    return (pair + min(others)) / 2


def names(results) -> list[str]:
    return [Path(r.path if hasattr(r, "path") else r["path"]).name for r in results]


# -- which photos hold a subtracted phrase ------------------------------------------------------


def test_a_photo_holds_a_phrase_when_every_word_starts_a_word_of_its_text(tmp_path):
    cat = Catalog(tmp_path / "catalog.sqlite")
    ids = {}
    with cat.transaction():
        for name, lines in {
            "both": ["Invoice 2024", "DRAFT"],
            "plural": ["drafts, invoices"],
            "inside": ["REDRAFT", "craft beer"],  # "draft" inside a word, and one letter off
            "accents": ["Brouillon: Facture réglée"],
            "none": [],
        }.items():
            ids[name] = cat.upsert_image(f"/p/{name}.jpg", 10, 1, None, 100, 100)
            store_text(cat, ids[name], lines)
    every = list(ids.values())
    held = holding_phrases(cat, ["draft"], every)
    assert set(held) == {ids["both"], ids["plural"]}
    assert [ln.text for ln in held[ids["both"]]] == ["DRAFT"]  # the lines that hold it
    assert set(holding_phrases(cat, ["the draft invoice"], every)) == {ids["both"], ids["plural"]}  # "the": ignored
    assert set(holding_phrases(cat, ["draft beer"], every)) == set()  # every word, not any word
    assert set(holding_phrases(cat, ["REGLEE"], every)) == {ids["accents"]}  # case and accents folded
    assert set(holding_phrases(cat, ["2024", "craft"], every)) == {ids["both"], ids["inside"]}  # any phrase
    assert set(holding_phrases(cat, ["draft"], [ids["plural"], ids["none"]])) == {ids["plural"]}  # only those asked
    assert holding_phrases(cat, ["draf"], every).keys() == {ids["both"], ids["plural"]}  # a word's start is enough
    assert holding_phrases(cat, ["dratf"], every) == {}  # no misreading forgiven


# -- the text side and fusion --------------------------------------------------------------------


@pytest.mark.ocr
def test_text_only_leaves_out_photos_whose_text_holds_a_subtracted_phrase(texted, tiny_model):
    lib_path, _, _, _ = texted
    with Library.open(lib_path, model=str(tiny_model), create=False) as lib:
        found = set(names(lib.search("invoice", text_only=True)))
        assert found == {"photo_0000.jpg", "copy_0000.jpg", "photo_0001.jpg", "photo_0003.jpg"}
        without_draft = found - {"photo_0001.jpg"}  # "Redraft" and "CRAFT" are not "draft"
        assert set(names(lib.search("invoice -draft", text_only=True))) == without_draft
        assert set(names(lib.search("invoice", subtract=["draft"], text_only=True))) == without_draft
        assert set(names(lib.search(Query.parse("invoice").minus("DRAFT"), text_only=True))) == without_draft
        assert set(names(lib.search("invoice", subtract=["2024 draft"], text_only=True))) == without_draft
        assert set(names(lib.search("invoice", subtract=["draft beer"], text_only=True))) == found  # nobody holds both
        assert set(names(lib.search("invoice -2024", text_only=True))) == {"photo_0003.jpg"}
        for query, subtract in (("-draft", ()), (None, ["draft"])):
            with pytest.raises(PixqueryError, match=r"--text-only needs a phrase to look for .*subtracted"):
                lib.search(query, subtract=subtract, text_only=True)


@pytest.mark.ocr
def test_fused_results_put_photos_holding_a_subtracted_phrase_last(texted, tiny_model):
    lib_path, photos, _, _ = texted
    with Library.open(lib_path, model=str(tiny_model), create=False) as lib:
        plain = lib.search("invoice", k=9)
        assert "photo_0001.jpg" in names(plain)[:4] and "text" in plain[0].found_by  # a text hit, up front
        every = lib.search("invoice -draft", k=9)
        assert len(every) == 9
        assert set(names(every)[-2:]) == {"photo_0001.jpg", "photo_0002.jpg"}  # text hit or not: last
        assert set(names(every)[:3]) == {"photo_0000.jpg", "copy_0000.jpg", "photo_0003.jpg"}  # the text hits left
        assert all("text" in r.found_by for r in every[:3])
        assert every[-1].matched is None and every[-2].matched is None  # no longer text hits
        why = {name: [m["text"] for m in r.demoted_by] for name, r in zip(names(every), every) if r.demoted_by}
        assert why == {"photo_0001.jpg": ["DRAFT"], "photo_0002.jpg": ["Drafts folder"]}  # and say why
        # a page shorter than the library: they fall off it, whether or not the query's words were found
        assert not {"photo_0001.jpg", "photo_0002.jpg"} & set(names(lib.search("invoice -draft", k=5)))
        assert not {"photo_0001.jpg", "photo_0002.jpg"} & set(names(lib.search("sunset -draft", k=5)))
        assert set(names(lib.search("sunset -draft", k=9))[-2:]) == {"photo_0001.jpg", "photo_0002.jpg"}

        # the semantic side alone does what it always did: the combined vector, no text consulted
        vector = combine(lib.encoder, Query.parse("invoice -draft"))
        by_meaning = names(lib.search("invoice -draft", k=9, semantic_only=True))
        assert by_meaning == names(lib.search(vector=vector, k=9))

        # an image part: the photo itself, but its text says "Drafts"
        drafts = photos / "photo_0002.jpg"
        assert names(lib.search(image=drafts, subtract=["draft"], k=9, semantic_only=True))[0] == "photo_0002.jpg"
        # after every photo not holding "draft", first of those that do (they keep their fused order)
        assert names(lib.search(image=drafts, subtract=["draft"], k=9))[-2:] == ["photo_0002.jpg", "photo_0001.jpg"]


@pytest.mark.ocr
def test_collapse_folds_text_only_and_fused_results(texted, tiny_model):
    lib_path, _, _, threshold = texted
    with Library.open(lib_path, model=str(tiny_model), create=False) as lib:
        text = lib.search("invoice", text_only=True)
        assert len(text) == 4
        folded = lib.search("invoice", text_only=True, collapse=threshold)
        assert [r.rank for r in folded] == [1, 2, 3]
        pair = {"photo_0000.jpg", "copy_0000.jpg"}
        keeper = next(r for r in folded if r.duplicates)
        assert {Path(keeper.path).name, *map(lambda p: Path(p).name, keeper.duplicates)} == pair
        assert not pair & set(names(r for r in folded if r is not keeper))
        assert keeper.found_by == "text" and keeper.matched  # still says why
        assert lib.search("invoice", text_only=True, collapse=0.0)[0].duplicates is None  # nothing that close
        assert len(lib.search("invoice", text_only=True, k=2, collapse=threshold)) == 2
        assert not lib.encoder._sessions  # folded by stored embeddings: no model session was made

        fused = lib.search("invoice -draft", k=8, collapse=threshold)
        assert len(fused) == 8  # 9 photos, one pair folded
        keeper = next(r for r in fused if r.duplicates)
        assert Path(keeper.path).name in pair and "text" in keeper.found_by
        assert names(fused)[-2:] and set(names(fused)[-2:]) == {"photo_0001.jpg", "photo_0002.jpg"}
        dated = lib.search("invoice", text_only=True, collapse=threshold, sort="date")
        assert sorted(names(dated)) == sorted(names(folded)) and [r.rank for r in dated] == [1, 2, 3]


@pytest.mark.ocr
def test_cli_and_http_exclude_by_text_and_collapse_text_only(texted, tiny_model, tmp_path):
    from test_server_support import running_server

    lib_path, _, _, threshold = texted
    base = ("-L", lib_path, "-m", tiny_model)
    r = pixquery("search", "invoice", "--text-only", "--collapse", "--collapse-threshold", threshold, *base)
    assert r.returncode == 0, r.stderr
    lines = [line.split("\t") for line in r.stdout.splitlines()]
    assert len(lines) == 3 and sum("(+1 near-duplicates)" in line[3] for line in lines) == 1
    r = pixquery("search", "invoice", "--subtract", "draft", "--text-only", "--json", *base)
    assert r.returncode == 0, r.stderr
    assert "photo_0001.jpg" not in names(json.loads(r.stdout)["results"])
    r = pixquery("search", "invoice -draft", "-k", "5", "--json", *base, env=NO_DAEMON)
    assert not {"photo_0001.jpg", "photo_0002.jpg"} & set(names(json.loads(r.stdout)["results"]))
    r = pixquery("search", "--text-only", *base, "--", "-draft")
    assert r.returncode == 2 and "--text-only needs a phrase to look for" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr

    with running_server(lib_path, tiny_model, tmp_path / "server.log") as server, server.client() as api:
        both = api.get("/api/search", params={"q": "invoice -draft", "k": 9}).json()["results"]
        assert set(names(both)[-2:]) == {"photo_0001.jpg", "photo_0002.jpg"}
        assert [bool(h["demoted_by"]) for h in both] == [False] * 7 + [True] * 2
        assert both[-1]["demoted_by"][0]["box"] and "draft" in both[-1]["demoted_by"][0]["text"].lower()
        page = api.get("/api/search", params={"q": "invoice", "subtract": "draft", "k": 5}).json()["results"]
        assert not {"photo_0001.jpg", "photo_0002.jpg"} & set(names(page))
        text = api.get("/api/search", params={"q": "invoice -draft", "match": "text"}).json()["results"]
        assert set(names(text)) == {"photo_0000.jpg", "copy_0000.jpg", "photo_0003.jpg"}
        folded = api.get(
            "/api/search",
            params={"q": "invoice -draft", "match": "text", "collapse": "true", "collapse_threshold": threshold},
        ).json()["results"]
        assert len(folded) == 2 and sum(len(h.get("duplicates") or []) for h in folded) == 1
        r = api.get("/api/search", params={"subtract": "draft", "match": "text"})
        assert r.status_code == 400 and "needs a phrase to look for" in r.json()["error"]


# -- end to end with real OCR weights ------------------------------------------------------------


@pytest.mark.ocr
def test_real_ocr_a_subtracted_word_drops_the_photo_holding_both(tmp_path, tiny_model):
    from test_ocr import background, with_text

    photos = tmp_path / "photos"
    photos.mkdir()
    invoice = with_text(background(0), "INVOICE", xy=(40, 60), size=48)[0]
    invoice.save(photos / "invoice.jpg", quality=92)
    invoice.resize((400, 300), Image.LANCZOS).save(photos / "invoice_small.jpg", quality=85)  # a near-duplicate
    draft = with_text(background(1), "INVOICE", xy=(40, 60), size=48)[0]
    with_text(draft, "DRAFT", xy=(60, 220), size=48)[0].save(photos / "draft.jpg", quality=92)
    for n in range(2, 5):
        background(n).save(photos / f"plain{n}.jpg", quality=92)
    lib = tmp_path / "lib"
    r = pixquery("index", photos, "-L", lib, "-m", tiny_model, "--ocr")
    assert r.returncode == 0, r.stderr
    base = ("-L", lib, "-m", tiny_model, "--json", "-k", "6")

    def found(*args) -> list[str]:
        r = pixquery("search", *args, *base, env=NO_DAEMON)
        assert r.returncode == 0, r.stderr
        return names(json.loads(r.stdout)["results"])

    assert "draft.jpg" in found("INVOICE")[:3]  # OCR read it: a text hit like the other two
    ranked = found("INVOICE -DRAFT")
    assert ranked[0] in {"invoice.jpg", "invoice_small.jpg"} and ranked[-1] == "draft.jpg"
    assert found("INVOICE", "--subtract", "draft") == ranked
    assert set(found("INVOICE -DRAFT", "--text-only")) == {"invoice.jpg", "invoice_small.jpg"}

    with Library.open(lib, model=str(tiny_model), create=False) as opened:
        model = opened.catalog.model_by_fingerprint(opened.encoder.fingerprint)
        ids = {p.name: opened.catalog.image_by_path(str(p)).id for p in sorted(photos.iterdir())}
        v = opened.catalog.photo_vectors(model.id, list(ids.values()))
    pair = angular_distance(float(np.dot(v[ids["invoice.jpg"]], v[ids["invoice_small.jpg"]])))
    apart = min(
        angular_distance(float(np.dot(v[ids[a]], v[ids[b]])))
        for a in ids
        for b in ids
        if a < b and {a, b} != {"invoice.jpg", "invoice_small.jpg"}
    )
    assert pair < apart, (pair, apart)
    r = pixquery(
        "search", "INVOICE", "--text-only", "--collapse", "--collapse-threshold", (pair + apart) / 2, "-L", lib,
        "-m", tiny_model,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert len(rows) == 2 and "(+1 near-duplicates)" in rows[0][3]
    assert Path(rows[0][3].split(" (+")[0]).name in {"invoice.jpg", "invoice_small.jpg"}
    assert Path(rows[1][3]).name == "draft.jpg"


@pytest.mark.ocr
def test_the_page_puts_photos_holding_a_subtracted_word_last_and_says_why(texted, tiny_model, tmp_path):
    """The search page's typed syntax, in a real Chromium: "invoice -draft" shows the photos whose
    text holds "draft" last, and the viewer says why."""
    from test_browser import chromium, opened_page
    from test_server_support import TOKEN, running_server

    lib_path = texted[0]
    # no folding on the page (on by default): the tiny random model puts these synthetic photos
    # closer than the default threshold, which is meant for real CLIP
    with (
        running_server(lib_path, tiny_model, tmp_path / "server.log", extra=("--duplicate-threshold", "0")) as server,
        chromium() as browser,
        opened_page(browser) as page,
    ):
        page.goto(f"{server.url}/?token={TOKEN}")
        page.fill("#q", "invoice -draft")
        page.press("#q", "Enter")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 9")
        shown = page.eval_on_selector_all("#grid .tile img", "els => els.map(e => e.alt)")
        assert set(shown[-2:]) == {"photo_0001.jpg", "photo_0002.jpg"}, shown
        page.locator("#grid .tile").nth(8).click()
        page.wait_for_selector("#viewer[open]")
        assert page.inner_text("#v-name") == shown[8]
        assert "moved down: its text holds a subtracted phrase" in page.inner_text("#v-text")
        assert page.locator("#v-text-boxes .text-box").count() == 0  # outlines are for matches only
        page.keyboard.press("Escape")
        page.wait_for_selector("#viewer", state="hidden")
        page.locator("#grid .tile").first.click()  # a text hit: its words, outlined, and no "moved down"
        page.wait_for_selector("#viewer[open]")
        page.wait_for_function("(n) => document.getElementById('v-name').textContent === n", arg=shown[0])
        assert "INVOICE" in page.inner_text("#v-text").upper() and "moved down" not in page.inner_text("#v-text")
        assert page.locator("#v-text-boxes .text-box").count() >= 1
        assert not page.problems, page.problems
