"""Issue #7's "done when": `pixquery index` on a folder of photos and videos, then a text query,
returns both kinds, videos with timestamps (adjacent hits merged into a time range), regions with
boxes. Through the real Library and the real CLI, with the tiny random-weight model.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("av", reason="video tests need PyAV (the [video] extra)")

from clirun import pixquery  # noqa: E402
from photos import make_photos  # noqa: E402
from videos import make_video  # noqa: E402

SCENES = [(3.0, 0), (2.5, 1), (3.5, 2)]


@pytest.fixture
def media(tmp_path):
    folder = tmp_path / "media"
    make_photos(folder, 4)
    make_video(folder / "clips" / "a.mp4", SCENES)
    make_video(folder / "clips" / "b.mkv", [(4.0, 10)])
    return folder


def test_library_indexes_photos_and_videos(media, tmp_path, tiny_model):
    from pixquery.api import Library
    from pixquery.ingest.decode import normalize, resize_crop
    from pixquery.ingest.video import extract_frame

    lib = Library.open(tmp_path / "lib", model=str(tiny_model))
    report = lib.index([media])
    assert report.failed == [] and report.found == 6 and report.indexed == 6
    assert report.videos == 2 and report.frames == 6 + 2  # a: 0, 2, 3 (cut), 5, 5.5 (cut), 7.5; b: 0, 2
    assert report.index.total == 4 + report.frames
    results = lib.search("a red car", k=20)
    kinds = {("video" if r.video_id else "photo") for r in results}
    assert kinds == {"photo", "video"}
    for r in results:
        if r.video_id:
            assert r.timestamp is not None and r.time_range[0] <= r.timestamp <= r.time_range[1]
            assert r.path.endswith((".mp4", ".mkv"))
    # a known frame finds its video and time
    cfg = lib.encoder.preprocess_cfg
    q = lib.encoder.encode_images(
        normalize(resize_crop(extract_frame(media / "clips" / "a.mp4", 5.5), cfg)[None], cfg)
    )[0]
    top = lib.search(vector=q, k=3)[0]
    assert top.path == str(media / "clips" / "a.mp4") and top.timestamp == pytest.approx(5.5) and top.score > 0.999
    # incremental: nothing to do; then a video deleted, one changed
    again = lib.index([media])
    assert (again.indexed, again.skipped, again.index.changed) == (0, 6, False)
    os.unlink(media / "clips" / "b.mkv")
    make_video(media / "clips" / "a.mp4", [(2.0, 40)])
    rep = lib.index([media])
    assert (rep.indexed, rep.removed, rep.videos, rep.frames) == (1, 1, 1, 1)
    assert rep.index.total == 4 + 1
    info = lib.info()
    assert info["videos"] == 1 and info["detections"] == 1
    # regions on: photos and frames get tiles; a search hit can carry a box
    rep = lib.index([media], regions=True)
    assert rep.regions > 0 and rep.videos == 1
    assert rep.index.total == lib.info()["detections"] + 4
    assert lib.index([media]).regions == 0  # kept on, nothing new to do
    boxes = [r.box for r in lib.search("a cup on the table", k=10) if r.box]
    assert all(0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1 for b in boxes)
    lib.close()


def test_cli_index_and_search_print_timestamps(media, tmp_path, tiny_model):
    env = {"PIXQUERY_LIBRARY": str(tmp_path / "lib")}
    r = pixquery("index", media, "--model", tiny_model, "--json", env=env)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["videos"] == 2 and summary["found"] == 6
    r = pixquery("search", "people at the beach", "-k", "10", env=env)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if ".mp4 @ " in line or ".mkv @ " in line]
    assert lines and all(" @ 00:00:0" in line for line in lines)
    r = pixquery("search", "people at the beach", "-k", "10", "--json", env=env)
    hits = [h for h in json.loads(r.stdout)["results"] if "video_id" in h]
    assert hits and all("timestamp" in h and len(h["time_range"]) == 2 for h in hits)
    assert np.all([h["time_range"][0] <= h["timestamp"] <= h["time_range"][1] for h in hits])


def test_a_long_video_does_not_crowd_out_other_results(tmp_path, tiny_model):
    """The 60 frames of one scene are the 60 best hits for a query made from one of them, and with a
    wide merge gap they all merge into one result: the search must fetch further than its first
    over-fetch (4k + 16 hits) so that k results still come back."""
    from pixquery.api import Library
    from pixquery.search import run_query

    folder = tmp_path / "media"
    make_photos(folder, 6)
    make_video(folder / "long.mp4", [(60.0, 3)], fps=2, size=(96, 64))
    lib = Library.open(tmp_path / "lib", model=str(tiny_model))
    report = lib.index([folder], every_seconds=1.0)
    assert report.failed == [] and report.frames >= 50
    blob = lib.catalog.db.execute(
        "SELECT e.vector FROM embedding e JOIN detection d ON d.id = e.detection_id WHERE d.video_id IS NOT NULL "
        "ORDER BY d.timestamp LIMIT 1 OFFSET 30"
    ).fetchone()[0]
    q = np.frombuffer(blob, dtype=np.float32)
    index, row = lib._index()
    _, refs = index.search(q[None], 4 * 5 + 16)
    first = lib.catalog.resolve(row.id, [int(r) for r in refs[0]])
    assert all(it.detection_id is not None for it in first.values())  # the first fetch: frames only
    results = run_query(lib.catalog, index, row, q, 5, merge_gap=1000.0)
    assert len(results) == 5 and [r.rank for r in results] == [1, 2, 3, 4, 5]
    videos = [r for r in results if r.video_id]
    assert len(videos) == 1 and videos[0].rank == 1
    assert videos[0].time_range[1] - videos[0].time_range[0] >= 50
    assert len({r.path for r in results}) == 5
    lib.close()
