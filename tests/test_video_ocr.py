"""Text in video frames (OCR): lines folded into runs of frames, stored per video in the catalog,
found by the text side of a search at the time they are on screen; `pixquery index --ocr` and
`search` end to end on real videos (PyAV) with RapidOCR's real weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("av", reason="video tests need PyAV (the [video] extra)")

from clirun import pixquery  # noqa: E402
from pixquery.catalog import Catalog  # noqa: E402
from pixquery.ingest.ocr import TextBox  # noqa: E402
from pixquery.ingest.video_text import TextRuns  # noqa: E402
from pixquery.text_search import TextHit  # noqa: E402
from videos import make_text_video  # noqa: E402

SHOWN = (4.0, 8.0)  # the word is on screen from 4 s to 8 s (exclusive) of a 12 s video


def _box(text: str, score: float = 0.9, y: float = 0.1) -> TextBox:
    return TextBox(text, (0.1, y, 0.5, y + 0.1), score)


# -- runs of frames ---------------------------------------------------------------------------


def test_a_line_on_consecutive_frames_is_one_run_and_survives_one_missed_frame():
    runs = TextRuns()
    frames = [
        (0.0, ["LOGO"]),
        (2.0, ["LOGO", "Sale"]),
        (4.0, ["LOGO"]),  # "Sale" not read in this frame (motion blur): its run goes on
        (6.0, ["LOGO", "SALE"]),  # the same words, folded: the run goes on
        (8.0, ["LOGO"]),
        (10.0, ["LOGO"]),  # missed twice: "Sale"'s run ended at 6
        (12.0, ["logo", "SALE"]),  # back: a new run
    ]
    for t, lines in frames:
        runs.add(t, [_box(text, score=0.5 + 0.01 * t) for text in lines])
    got = [(r.text, r.start, r.end) for r in runs.runs()]
    assert got == [("logo", 0.0, 12.0), ("SALE", 2.0, 6.0), ("SALE", 12.0, 12.0)]
    assert runs.frames == 7


def test_a_constant_logo_over_a_long_video_is_one_row_not_one_per_frame():
    runs = TextRuns()
    for n in range(300):  # 10 minutes sampled every 2 s
        runs.add(2.0 * n, [_box("CHANNEL 4", score=0.9 if n != 150 else 0.95), _box("CHANNEL 4", y=0.8)])
    (run,) = runs.runs()
    assert (run.start, run.end, run.score) == (0.0, 598.0, 0.95)


# -- the catalog ------------------------------------------------------------------------------


def _catalog(tmp_path) -> tuple[Catalog, int, int]:
    cat = Catalog(tmp_path / "catalog.sqlite")
    with cat.transaction():
        photo = cat.upsert_image("/p/a.jpg", 10, 1, None, 100, 100)
        cat.replace_photo_text(
            photo, [("ZEBRA CROSSING", (0, 0, 1, 0.2), 0.9)], size=10, mtime_ns=1, config="c", seconds=0
        )
        video = cat.upsert_video("/v/a.mp4", 20, 2, width=320, height=192, duration=12.0, fps=5.0, frame_count=60)
        cat.replace_video_text(
            video,
            [("ZEBRA 42", (0.1, 0.3, 0.8, 0.5), 0.99, 4.0, 6.0), ("NEWS", (0, 0, 0.2, 0.1), 0.8, 0.0, 10.0)],
            size=20,
            mtime_ns=2,
            config="c",
            frames=6,
            seconds=0.3,
        )
    return cat, photo, video


def test_video_text_is_stored_per_run_found_by_substring_and_read_again_when_it_changes(tmp_path):
    cat, photo, video = _catalog(tmp_path)
    lines = sorted(cat.lines_containing("zebra"), key=lambda ln: ln.video_id or 0)
    assert [(ln.image_id, ln.video_id) for ln in lines] == [(photo, None), (None, video)]
    assert (lines[1].timestamp, lines[1].timestamp_end, lines[1].text) == (4.0, 6.0, "ZEBRA 42")
    assert cat.ocr_video_counts() == (1, 2)
    assert cat.videos_to_read("c") == [] and [r[0] for r in cat.videos_to_read("other")] == [video]
    with cat.transaction():  # the file changed on disk: read again
        cat.upsert_video("/v/a.mp4", 21, 3, width=320, height=192, duration=12.0, fps=5.0, frame_count=60)
    assert [r[0] for r in cat.videos_to_read("c")] == [video]
    with cat.transaction():
        cat.forget_video_text(video)
    assert [ln.image_id for ln in cat.lines_containing("zebra")] == [photo]
    assert cat.ocr_video_counts() == (0, 0)


def test_a_deleted_video_is_never_a_text_hit_and_its_text_goes_with_it(tmp_path):
    cat, photo, video = _catalog(tmp_path)
    with cat.transaction():
        cat.mark_videos_deleted([video])
    assert [ln.image_id for ln in cat.lines_containing("zebra")] == [photo]
    with cat.transaction():
        cat.purge_deleted_videos()
    assert cat.db.execute("SELECT COUNT(*) FROM text_index").fetchone()[0] == 1  # the trigger dropped its lines
    assert cat.db.execute("SELECT COUNT(*) FROM ocr_video_scan").fetchone()[0] == 0


def test_ocr_off_forgets_the_text_of_videos_too(tmp_path):
    cat, _, video = _catalog(tmp_path)
    with cat.transaction():
        cat.drop_all_text()
    assert cat.lines_containing("zebra") == [] and cat.lines_containing("news") == []
    assert [r[0] for r in cat.videos_to_read("c")] == [video]


@pytest.mark.ocr
def test_the_text_side_finds_a_video_at_the_time_its_words_are_on_screen(tmp_path):
    from pixquery.text_search import search_text

    cat, photo, video = _catalog(tmp_path)
    with cat.transaction():  # the same words again later: a second run, not part of the first span
        cat.replace_video_text(
            video,
            [
                ("ZEBRA 42", (0.1, 0.3, 0.8, 0.5), 0.99, 4.0, 6.0),
                ("zebra", (0.1, 0.6, 0.3, 0.7), 0.9, 5.0, 8.0),
                ("ZEBRA 42", (0.1, 0.3, 0.8, 0.5), 0.97, 30.0, 32.0),
            ],
            size=20,
            mtime_ns=2,
            config="c",
            frames=20,
            seconds=1,
        )
    hits = {h.key: h for h in search_text(cat, "zebra 42")}
    assert set(hits) == {("video", video), ("image", photo)} or set(hits) == {("video", video)}
    hit = hits[("video", video)]
    assert hit.image_id is None and hit.score == 1.0
    assert (hit.timestamp, hit.time_range) == (4.0, (4.0, 8.0))
    assert {ln.timestamp for ln in hit.lines} == {4.0, 5.0, 30.0}


def test_fusion_joins_a_videos_text_hit_with_its_semantic_result_at_the_same_moment(tmp_path):
    from pixquery.search import Results, SearchResult, fuse_with_text

    cat, photo, video = _catalog(tmp_path)
    other = None
    with cat.transaction():
        other = cat.upsert_video("/v/b.mp4", 20, 2, width=320, height=192, duration=60.0, fps=5.0, frame_count=300)
    line = cat.lines_containing("zebra 42")[0]
    semantic = Results(
        [
            SearchResult(1, 0.3, 0.4, "", video_id=video, detection_id=1, timestamp=2.0, time_range=(0.0, 2.0)),
            SearchResult(2, 0.2, 0.43, "", video_id=other, detection_id=2, timestamp=10.0),
        ]
    )
    near = TextHit(None, 1.0, [line], video_id=video, timestamp=4.0, time_range=(4.0, 6.0))
    fused = fuse_with_text(cat, semantic, [near], 5, lambda ids: {}, merge_gap=3.0)
    assert [(r.video_id, r.found_by, r.timestamp, r.time_range) for r in fused] == [
        (video, "semantic+text", 4.0, (4.0, 6.0)),  # found by both: points where the words are
        (other, "semantic", 10.0, None),
    ]
    assert fused[0].matched[0]["text"] == "ZEBRA 42" and fused[0].matched[0]["timestamp"] == 4.0

    # Far from the semantic result's moment: a result of its own, scored by the frame at its time.
    asked = []
    far = TextHit(None, 1.0, [line], video_id=video, timestamp=40.0, time_range=(40.0, 42.0))
    semantic = Results([SearchResult(1, 0.3, 0.4, "", video_id=video, detection_id=1, timestamp=2.0)])

    def frame_cosine_of(video_id, t):
        asked.append((video_id, t))
        return 0.25

    fused = fuse_with_text(cat, semantic, [far], 5, lambda ids: {}, frame_cosine_of=frame_cosine_of, merge_gap=3.0)
    assert asked == [(video, 40.0)]
    assert [(r.found_by, r.timestamp, r.score) for r in fused] == [("text", 40.0, 0.25), ("semantic", 2.0, 0.3)]


# -- a subtracted phrase and videos: held at the moment of the hit ------------------------------


def _store_video_text(cat: Catalog, video: int, lines: list[tuple[str, float, float]]) -> None:
    """`video`'s text: (text, first second, last second) each, as ingest/video_text.py stores runs."""
    cat.replace_video_text(
        video,
        [(t, (0.1, 0.1 + 0.2 * n, 0.8, 0.25 + 0.2 * n), 0.95, a, b) for n, (t, a, b) in enumerate(lines)],
        size=1,
        mtime_ns=1,
        config="test",
        frames=6,
        seconds=0.0,
    )


def test_a_video_holds_a_subtracted_phrase_only_where_its_words_are_on_screen_at_the_hits_time(tmp_path):
    from pixquery.text_search import held_in_videos

    cat = Catalog(tmp_path / "catalog.sqlite")
    with cat.transaction():
        video = cat.upsert_video("/v/a.mp4", 1, 1, width=320, height=192, duration=60.0, fps=5.0, frame_count=300)
        other = cat.upsert_video("/v/b.mp4", 1, 1, width=320, height=192, duration=60.0, fps=5.0, frame_count=300)
        _store_video_text(cat, video, [("INVOICE", 0.0, 20.0), ("DRAFT copy", 4.0, 8.0), ("for SALE", 30.0, 30.0)])
        _store_video_text(cat, other, [("Redraft", 0.0, 60.0)])
    held = held_in_videos(cat, ["draft"], [video, other])
    assert [ln.text for ln in held.at(video, 6.0, (4.0, 10.0))] == ["DRAFT copy"]  # the spans meet
    assert [ln.text for ln in held.at(video, 8.0)] == ["DRAFT copy"]  # one frame: the run's last one counts
    assert held.at(video, 10.0, (10.0, 20.0)) == []  # on screen earlier only: not held now
    assert held.at(video, 2.0) == []
    assert [ln.text for ln in held.at(video, None)] == ["DRAFT copy"]  # no time: anywhere in the video
    assert held.at(other, 6.0) == []  # "Redraft" is not the word "draft"
    assert held.at(None, 6.0) == [] and held_in_videos(cat, ["draft"], []).at(video, 6.0) == []
    # every word of a phrase on screen at that time, in one line or several
    both = held_in_videos(cat, ["draft invoice"], [video])
    assert {ln.text for ln in both.at(video, 5.0)} == {"INVOICE", "DRAFT copy"}
    assert both.at(video, 12.0) == []  # "invoice" without "draft"
    assert held_in_videos(cat, ["sale draft"], [video]).at(video, 0.0, (0.0, 60.0)) != []  # both in the span
    assert held_in_videos(cat, ["sale draft"], [video]).at(video, 6.0) == []
    assert held_in_videos(cat, ["the", "a"], [video]).lines == {}  # no words left to hold: nothing is held


@pytest.mark.ocr
def test_a_videos_text_hit_moves_to_where_its_words_are_on_screen_without_the_subtracted_phrase(tmp_path):
    from pixquery.text_search import held_in_videos, search_text, without_held

    cat, photo, video = _catalog(tmp_path)
    with cat.transaction():
        always = cat.upsert_video("/v/b.mp4", 1, 1, width=320, height=192, duration=60.0, fps=5.0, frame_count=300)
        _store_video_text(cat, video, [("ZEBRA 42", 4.0, 6.0), ("DRAFT", 4.0, 4.0), ("zebra 42", 30.0, 32.0)])
        _store_video_text(cat, always, [("ZEBRA 42", 4.0, 6.0), ("zebra 42", 30.0, 32.0), ("DRAFT", 0.0, 60.0)])
    hits = {h.key: h for h in search_text(cat, "zebra")}
    assert hits[("video", video)].time_range == (4.0, 6.0)  # first on screen with DRAFT
    held = held_in_videos(cat, ["draft"], [video, always])
    moved = without_held(hits[("video", video)], held)
    assert (moved.timestamp, moved.time_range, [ln.text for ln in moved.lines]) == (30.0, (30.0, 32.0), ["zebra 42"])
    assert moved.score == hits[("video", video)].score
    assert without_held(hits[("video", always)], held) is None  # DRAFT on screen whenever the words are
    assert without_held(hits[("image", photo)], held) is hits[("image", photo)]  # photos: holding_phrases'
    assert without_held(hits[("video", video)], held_in_videos(cat, ["sale"], [video])) is hits[("video", video)]


@pytest.fixture(scope="module")
def zebra_videos(tmp_path_factory, tiny_model):
    """(library, name -> video id): three real videos indexed with the tiny model (no OCR run), and
    text stored for them through the catalog as ingest/video_text.py stores what it reads: all
    three show ZEBRA from 4 s to 8 s; "draft.mp4" shows DRAFT then too, "later.mp4" only at 10 s."""
    from pixquery.api import Library
    from pixquery.catalog.text import SETTING_OCR
    from pixquery.ingest.ocr import OcrConfig

    root = tmp_path_factory.mktemp("video-subtract")
    media = root / "media"
    for seed, name in enumerate(("plain.mp4", "draft.mp4", "later.mp4")):
        make_text_video(media / name, None, seed=seed, seconds=10.0)
    lib_path = root / "lib"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        assert lib.index([media], workers=1).videos == 3
        ids = {Path(p).name: row[0] for p, row in lib.catalog.videos_under(str(media)).items()}
        with lib.catalog.transaction():
            lib.catalog.set_setting(SETTING_OCR, OcrConfig().to_json())
            _store_video_text(lib.catalog, ids["plain.mp4"], [("ZEBRA crossing", 4.0, 8.0)])
            _store_video_text(lib.catalog, ids["draft.mp4"], [("ZEBRA crossing", 4.0, 8.0), ("DRAFT", 4.0, 8.0)])
            _store_video_text(lib.catalog, ids["later.mp4"], [("ZEBRA crossing", 4.0, 8.0), ("DRAFT", 10.0, 10.0)])
    return lib_path, ids


@pytest.mark.ocr
def test_a_video_holding_a_subtracted_phrase_when_found_comes_last_and_is_no_text_hit(zebra_videos, tiny_model):
    from pixquery.api import Library

    lib_path, ids = zebra_videos
    with Library.open(lib_path, model=str(tiny_model), create=False) as lib:
        plain = lib.search("zebra", k=5)
        assert sorted(Path(r.path).name for r in plain) == ["draft.mp4", "later.mp4", "plain.mp4"]
        assert all("text" in r.found_by and r.demoted_by is None for r in plain)

        fused = lib.search("zebra -draft", k=5)
        got = [(Path(r.path).name, r.found_by, bool(r.demoted_by)) for r in fused]
        # "later.mp4" shows DRAFT at 10 s, not while ZEBRA is on screen: a hit like any other
        assert sorted(got[:2]) == [("later.mp4", "semantic+text", False), ("plain.mp4", "semantic+text", False)]
        assert got[2] == ("draft.mp4", "semantic", True)  # after the others, found by meaning only
        last = fused[2]
        assert last.matched is None
        assert [(m["text"], m["timestamp"], m["timestamp_end"]) for m in last.demoted_by] == [("DRAFT", 4.0, 8.0)]
        assert fused[0].timestamp == 4.0 and fused[0].time_range == (4.0, 8.0)  # where the words are
        assert [Path(r.path).name for r in lib.search("zebra", subtract=["draft"], k=5)] == [r[0] for r in got]

        only = lib.search("zebra -draft", k=5, text_only=True)
        assert sorted(Path(r.path).name for r in only) == ["later.mp4", "plain.mp4"]  # dropped
        assert sorted(Path(r.path).name for r in lib.search("zebra", k=5, text_only=True)) == sorted(ids)
        # a phrase none holds whole at that time, and --semantic-only: nobody demoted
        assert not any(r.demoted_by for r in lib.search("zebra -draft sale", k=5))
        assert len(lib.search("zebra -draft sale", k=5, text_only=True)) == 3
        assert len(lib.search("zebra -draft crossing", k=5, text_only=True)) == 2  # both words then, two lines
        assert not any(r.demoted_by for r in lib.search("zebra -draft", k=5, semantic_only=True))


@pytest.mark.ocr
def test_http_demotes_a_video_holding_a_subtracted_phrase_at_the_hits_time(zebra_videos, tiny_model, tmp_path):
    from test_server_support import running_server

    lib_path, _ = zebra_videos
    with running_server(lib_path, tiny_model, tmp_path / "server.log") as server, server.client() as api:
        hits = api.get("/api/search", params={"q": "zebra", "subtract": "draft", "k": 5}).json()["results"]
        assert [(h["name"], bool(h.get("demoted_by"))) for h in hits][2] == ("draft.mp4", True)
        assert [(m["text"], m["timestamp"], m["timestamp_end"]) for m in hits[2]["demoted_by"]] == [("DRAFT", 4.0, 8.0)]
        assert not any(h.get("demoted_by") for h in hits[:2])
        text = api.get("/api/search", params={"q": "zebra -draft", "match": "text"}).json()["results"]
        assert sorted(h["name"] for h in text) == ["later.mp4", "plain.mp4"]


# -- end to end: real videos, real OCR weights, the real command -------------------------------


@pytest.mark.ocr
def test_index_ocr_then_search_finds_the_video_where_the_word_is_on_screen(tmp_path, tiny_model):
    from photos import photo

    media = tmp_path / "media"
    _, box = make_text_video(media / "sign.mp4", "ZEBRA 42", SHOWN)
    make_text_video(media / "plain.mp4", None, seed=3)
    photo((320, 240), seed=5).save(media / "plain.jpg")
    lib = tmp_path / "lib"

    r = pixquery("index", media, "-L", lib, "-m", tiny_model, "--ocr")
    assert r.returncode == 0, r.stderr
    assert "text: read 2 videos (12 frames), 1 lines found" in r.stdout  # 6 frames each; one run

    r = pixquery("search", "ZEBRA", "-L", lib, "-m", tiny_model, "--json", "-k", "3")
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)["results"][0]
    assert top["path"] == str(media / "sign.mp4") and "text" in top["found_by"].split("+")
    assert SHOWN[0] <= top["timestamp"] < SHOWN[1]
    assert SHOWN[0] <= top["time_range"][0] <= top["time_range"][1] < SHOWN[1]
    (m,) = top["matched"]
    assert m["text"].replace(" ", "") == "ZEBRA42" and SHOWN[0] <= m["timestamp"] <= m["timestamp_end"] < SHOWN[1]
    assert abs(m["box"][0] - box[0]) < 0.05 and abs(m["box"][1] - box[1]) < 0.05

    r = pixquery("search", "EBRA", "-L", lib, "-m", tiny_model, "--text-only")  # a sub-string
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert f"{media / 'sign.mp4'} @ 00:00:0" in line and '"ZEBRA 42"' in line.replace("ZEBRA42", "ZEBRA 42")
    r = pixquery("search", "zebra", "-L", lib, "-m", tiny_model, "--text-only", "--type", "photo", "--json")
    assert json.loads(r.stdout)["results"] == []  # filters apply to video text hits too

    # the video changes: its old text goes, the new one is read (in its decode process)
    make_text_video(media / "sign.mp4", "QUOKKA", (0.0, 4.0), seed=1)
    os.utime(media / "sign.mp4", ns=(1, 1))
    r = pixquery("index", "-L", lib, "-m", tiny_model, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert (report["videos"], report["text_videos"], report["text_video_lines"]) == (1, 1, 1)
    r = pixquery("search", "zebra", "-L", lib, "-m", tiny_model, "--text-only", "--json")
    assert json.loads(r.stdout)["results"] == []
    r = pixquery("search", "quokka", "-L", lib, "-m", tiny_model, "--text-only", "--json")
    (hit,) = json.loads(r.stdout)["results"]
    assert Path(hit["path"]).name == "sign.mp4" and 0.0 <= hit["timestamp"] < 4.0

    r = pixquery("index", "-L", lib, "-m", tiny_model, "--no-ocr")
    assert r.returncode == 0, r.stderr
    r = pixquery("search", "quokka", "-L", lib, "-m", tiny_model, "--text-only")
    assert r.returncode == 2 and "run pixquery index --ocr" in r.stderr and "Traceback" not in r.stderr
    with Catalog(lib / "catalog.sqlite") as cat:
        assert cat.ocr_video_counts() == (0, 0)
        assert cat.db.execute("SELECT COUNT(*) FROM text_index").fetchone()[0] == 0


@pytest.mark.ocr
def test_cli_a_video_reading_a_subtracted_word_where_the_query_is_found_goes_last(tmp_path, tiny_model):
    media = tmp_path / "media"
    make_text_video(media / "draft.mp4", "ZEBRA DRAFT", SHOWN, seconds=10.0)
    make_text_video(media / "sign.mp4", "ZEBRA 42", SHOWN, seed=2, seconds=10.0)
    lib = tmp_path / "lib"
    r = pixquery("index", media, "-L", lib, "-m", tiny_model, "--ocr")
    assert r.returncode == 0, r.stderr

    r = pixquery("search", "zebra", "-L", lib, "-m", tiny_model, "--text-only", "--json")
    assert sorted(Path(h["path"]).name for h in json.loads(r.stdout)["results"]) == ["draft.mp4", "sign.mp4"]
    r = pixquery("search", "zebra -draft", "-L", lib, "-m", tiny_model, "--text-only", "--json")
    assert r.returncode == 0, r.stderr
    assert [Path(h["path"]).name for h in json.loads(r.stdout)["results"]] == ["sign.mp4"]

    r = pixquery("search", "zebra -draft", "-L", lib, "-m", tiny_model, "--json", "-k", "5")
    assert r.returncode == 0, r.stderr
    first, last = json.loads(r.stdout)["results"]
    assert Path(first["path"]).name == "sign.mp4" and "text" in first["found_by"] and "demoted_by" not in first
    assert Path(last["path"]).name == "draft.mp4" and last["found_by"] == "semantic" and "matched" not in last
    (why,) = last["demoted_by"]  # the line, and when it is on screen
    assert "DRAFT" in why["text"] and SHOWN[0] <= why["timestamp"] <= why["timestamp_end"] < SHOWN[1]


@pytest.mark.ocr
def test_ocr_turned_on_reads_videos_indexed_before_and_the_api_and_http_return_them(tmp_path, tiny_model):
    from pixquery.api import Library
    from test_server_support import running_server

    media = tmp_path / "media"
    make_text_video(media / "sign.mp4", "ZEBRA 42", SHOWN)
    make_text_video(media / "plain.mp4", None, seed=3)
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        assert lib.index([media], workers=1).videos == 2
        report = lib.index([media], workers=1, ocr=True)  # nothing to embed: the pass reads them
        assert (report.indexed, report.text_videos, report.text_video_frames, report.text_video_lines) == (0, 2, 12, 1)
        assert lib.index([media], workers=1).text_videos == 0  # remembered: read once
        (hit,) = lib.search("zebra", k=5, text_only=True)
        assert Path(hit.path).name == "sign.mp4" and hit.video_id is not None and hit.image_id is None
        assert SHOWN[0] <= hit.timestamp < SHOWN[1]
        fused = lib.search("zebra", k=5)
        assert Path(fused[0].path).name == "sign.mp4" and "text" in fused[0].found_by
        assert SHOWN[0] <= fused[0].timestamp < SHOWN[1]
        # a subtracted phrase its text does not hold at that time leaves it a text hit
        for found in (lib.search("zebra -draft", k=5), lib.search("zebra -draft", k=5, text_only=True)):
            assert Path(found[0].path).name == "sign.mp4" and "text" in found[0].found_by

    with running_server(lib_path, tiny_model, tmp_path / "server.log") as server, server.client() as api:
        hits = api.get("/api/search", params={"q": "ZEBRA"}).json()["results"]
        top = hits[0]
        assert top["name"] == "sign.mp4" and top["kind"] == "video" and "text" in top["found_by"]
        assert SHOWN[0] <= top["timestamp"] < SHOWN[1] and SHOWN[0] <= top["matched"][0]["timestamp"] < SHOWN[1]
        frame = api.get(top["thumbnail"])  # the frame at the words' time
        assert frame.status_code == 200 and frame.headers["content-type"].startswith("image/")
        text = api.get("/api/search", params={"q": "ebra", "match": "text"}).json()["results"]
        assert [(h["name"], h["kind"]) for h in text] == [("sign.mp4", "video")]


@pytest.mark.ocr
def test_the_viewer_shows_a_video_found_by_its_text_at_the_words_time(tmp_path, tiny_model):
    from pixquery.api import Library
    from test_browser import chromium, opened_page
    from test_ocr import overlap
    from test_server_support import TOKEN, running_server

    media = tmp_path / "media"
    _, box = make_text_video(media / "sign.mp4", "ZEBRA 42", SHOWN)
    make_text_video(media / "plain.mp4", None, seed=3)
    lib_path = tmp_path / "lib"
    with Library.open(lib_path, model=str(tiny_model)) as lib:
        lib.index([media], workers=1, ocr=True)
    with (
        running_server(lib_path, tiny_model, tmp_path / "server.log") as server,
        chromium() as browser,
        opened_page(browser) as page,
    ):
        page.goto(f"{server.url}/?token={TOKEN}")
        page.fill("#q", "zebra")
        page.press("#q", "Enter")
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length >= 2")
        assert "▶ 0:04" in page.locator("#grid .tile").first.inner_text()
        page.locator("#grid .tile").first.click()
        page.wait_for_selector("#viewer[open]")
        assert page.inner_text("#v-name") == "sign.mp4"
        assert page.inner_text("#v-when").startswith("0:04")
        assert "ZEBRA" in page.inner_text("#v-text")
        # the frame at the words' time, then the player in its place: the outline stays on the words
        page.wait_for_function("() => !document.getElementById('v-video').hidden")
        frame = page.locator("#v-video").bounding_box()
        outline = page.locator("#v-text-boxes .text-box").first.bounding_box()
        shown = (
            (outline["x"] - frame["x"]) / frame["width"],
            (outline["y"] - frame["y"]) / frame["height"],
            (outline["x"] + outline["width"] - frame["x"]) / frame["width"],
            (outline["y"] + outline["height"] - frame["y"]) / frame["height"],
        )
        assert overlap(shown, box) > 0.4, (shown, box)
        page.keyboard.press("ArrowRight")  # the other video, found by meaning only: no words shown
        page.wait_for_function("() => document.getElementById('v-name').textContent === 'plain.mp4'")
        assert page.locator("#v-text-boxes .text-box").count() == 0 and page.is_hidden("#v-text")
        assert not page.problems, page.problems
