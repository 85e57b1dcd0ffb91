"""Videos: frame sampling and scene changes, broken files, storage in the catalog, search by time.

Real PyAV (videos made by tests/videos.py), real ONNX Runtime (the tiny random-weight ViT),
real SQLite and a real flat index. Random weights rank meaninglessly, so queries here are a known
frame's own embedding: the right answer is that frame's video and time.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("av", reason="video tests need PyAV (the [video] extra)")

from pixquery import indexes  # noqa: E402
from pixquery.catalog import Catalog  # noqa: E402
from pixquery.ingest import pipeline  # noqa: E402
from pixquery.ingest.decode import normalize, resize_crop  # noqa: E402
from pixquery.ingest.items import VIDEO, DecodeSettings, MediaItem  # noqa: E402
from pixquery.ingest.scan import FileEntry  # noqa: E402
from pixquery.ingest.video import (  # noqa: E402
    DecodeStats,
    SamplingConfig,
    VideoError,
    extract_frame,
    format_timestamp,
    probe,
    sample_frames,
)
from pixquery.ingest.write import CatalogWriter  # noqa: E402
from videos import Scene, corrupted_copy, make_video, scene_starts, truncated_copy  # noqa: E402

SCENES = [(3.0, 0), (2.5, 1), (3.5, 2), (1.5, 3)]  # cuts at 3.0, 5.5 and 9.0 s


# -- sampling -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm", ".mkv"])
def test_scene_changes_found_within_one_sampling_step(tmp_path, suffix):
    path = make_video(tmp_path / f"scenes{suffix}", SCENES)
    cfg = SamplingConfig(every_seconds=2.0)
    stats = DecodeStats()
    frames = list(sample_frames(path, cfg, stats))
    times = [f.timestamp for f in frames]
    cuts = [f.timestamp for f in frames if f.scene_change]
    starts = scene_starts(SCENES)[1:]
    assert len(cuts) == len(starts), (cuts, times)
    step = 1.0 / cfg.analysis_fps
    for start, cut in zip(starts, cuts):
        # found at the first analysed frame at or after the cut: within one analysis step, far
        # inside one sampling step (every_seconds)
        assert start - 1e-6 <= cut <= start + step + 0.1 + 1e-6, (start, cut)
    assert times == sorted(times) and times[0] == 0.0
    # the clock: never more than every_seconds between samples
    assert max(np.diff(times + [sum(s for s, _ in SCENES)])) <= cfg.every_seconds + 0.1 + 1e-6
    assert stats.sampled == len(frames) and stats.scene_changes == len(cuts)
    assert stats.decoded > stats.sampled and stats.problem() is None
    assert all(f.image.size == (160, 96) and f.image.mode == "RGB" for f in frames)


def test_periodic_sampling_only(tmp_path):
    path = make_video(tmp_path / "clock.mp4", [(7.0, 0)], fps=10)
    times = [round(f.timestamp, 3) for f in sample_frames(path, every_seconds=1.5, scene_threshold=0)]
    assert times == [0.0, 1.5, 3.0, 4.5, 6.0]


def test_scene_changes_only(tmp_path):
    path = make_video(tmp_path / "cuts.mp4", SCENES)
    times = [f.timestamp for f in sample_frames(path, every_seconds=0)]
    assert [round(t, 2) for t in times] == [0.0, 3.0, 5.5, 9.0]


def test_static_scene_is_sampled_sparsely(tmp_path):
    # A camera looking at nothing moving: periodic samples equal to the last kept one are skipped,
    # at most for max_static_seconds; the moving scene after it is sampled every time.
    path = make_video(tmp_path / "static.mp4", [Scene(8.0, 0, motion=False), Scene(4.0, 0, motion=True)])
    stats = DecodeStats()
    times = [
        round(f.timestamp, 2)
        for f in sample_frames(path, stats=stats, every_seconds=1.0, max_static_seconds=5.0, scene_threshold=0)
    ]
    static = [t for t in times if t < 8.0]
    assert static == [0.0, 5.0], times  # 1..4 skipped, 5.0 kept (5 s without a sample), 6, 7 skipped
    assert [t for t in times if t >= 8.0] == [8.0, 9.0, 10.0, 11.0]
    assert stats.static_skipped == 6  # 1, 2, 3, 4, 6, 7
    # turned off, every periodic sample is kept
    assert len(list(sample_frames(path, every_seconds=1.0, static_threshold=0, scene_threshold=0))) == 12


def test_keyframes_only(tmp_path):
    path = make_video(tmp_path / "gop.mp4", SCENES, gop=10)  # a key frame every second
    stats = DecodeStats()
    times = [round(f.timestamp, 2) for f in sample_frames(path, stats=stats, keyframes_only=True, every_seconds=2.0)]
    assert stats.decoded <= 11  # 10 s at one key frame a second (+ x264's scene-cut key frames)
    assert all(abs(t - round(t)) < 1e-6 for t in times)
    assert {3.0, 6.0, 9.0} & set(times)  # cuts found at the first key frame after them


def test_probe_and_extract_frame(tmp_path):
    path = make_video(tmp_path / "p.mp4", SCENES, size=(176, 112))
    info = probe(path)
    assert (info.width, info.height, info.codec) == (176, 112, "h264")
    assert info.fps == pytest.approx(10.0)
    assert info.duration == pytest.approx(10.5, abs=0.15)
    assert info.frame_count == 105
    # the frame at a sample's timestamp is that sample's picture
    frames = {round(f.timestamp, 2): f.image for f in sample_frames(path)}
    for t in (0.0, 5.5, 9.0):
        got = np.asarray(extract_frame(path, t), dtype=np.int16)
        assert np.abs(got - np.asarray(frames[t], dtype=np.int16)).mean() < 1.0


def test_phone_portrait_video_is_seen_as_shown(tmp_path):
    from videos import rotated_copy, scene_frame

    stored = make_video(tmp_path / "stored.mp4", [Scene(2.0, 4, motion=False)], size=(96, 64))
    phone = rotated_copy(stored, tmp_path / "phone.mp4")
    info = probe(phone)
    assert (info.width, info.height, info.rotation) == (64, 96, -90)
    frames = list(sample_frames(phone, stats=(stats := DecodeStats())))
    assert stats.info.width == 64 and frames[0].image.size == (64, 96)
    # turned clockwise: the stored picture's left column is the shown picture's top row
    want = np.rot90(scene_frame(4, (96, 64), motion=False), k=-1).astype(np.int16)
    got = np.asarray(frames[0].image, dtype=np.int16)
    assert np.abs(got - want).mean() < 6
    assert extract_frame(phone, 1.0).size == (64, 96)


@pytest.mark.parametrize("content", [b"", b"this is not a video\n" * 20])
def test_unreadable_files_raise_video_error(tmp_path, content):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError) as e:
        list(sample_frames(path))
    assert e.value.path == str(path) and e.value.reason
    with pytest.raises(VideoError):
        probe(path)


def test_truncated_and_corrupt_videos_yield_what_decodes(tmp_path):
    good = make_video(tmp_path / "good.mp4", SCENES)
    cut = truncated_copy(good, tmp_path / "cut.mp4", 0.5)
    stats = DecodeStats()
    times = [f.timestamp for f in sample_frames(cut, stats=stats)]
    assert times and times[0] == 0.0 and max(times) < 8.0
    assert "truncated" in stats.problem() and "of 00:00:10" in stats.problem()
    # the MP4 index at the end (no faststart): a truncated file cannot be opened at all
    late = truncated_copy(make_video(tmp_path / "late.mp4", SCENES, faststart=False), tmp_path / "late_cut.mp4", 0.5)
    with pytest.raises(VideoError, match="truncated"):
        list(sample_frames(late))
    # noise over the middle: the frames around it still come, in time order
    bad = corrupted_copy(good, tmp_path / "noisy.mp4", 0.4, 0.1)
    times = [f.timestamp for f in sample_frames(bad)]
    assert times[0] == 0.0 and max(times) > 8.0


def test_format_timestamp():
    assert format_timestamp(0) == "00:00:00"
    assert format_timestamp(751.9) == "00:12:31"
    assert format_timestamp(3 * 3600 + 62.6) == "03:01:02"
    assert format_timestamp(2.9999999) == "00:00:03"  # float noise is not a second early


# -- catalog + index ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    from conftest_models import tiny_model_dir
    from pixquery.encoders.registry import load_encoder

    return load_encoder(tiny_model_dir("vit"))


class Lib:
    """A library in a folder (a flat index), built and searched by the real Library, with ways to
    look inside its catalog."""

    def __init__(self, folder, encoder):
        from pixquery.api import Library

        self.folder = folder
        self.encoder = encoder
        self.library = Library.open(folder, model=str(encoder.model_dir))
        self.library._encoder = encoder  # the module's loaded encoder (as server/pool.py shares one)
        self.catalog = self.library.catalog
        with self.catalog.transaction():
            self.model = self.catalog.ensure_model(encoder.name, encoder.fingerprint, encoder.dim)

    def update(self, roots, sampling=None, regions=None, batch_size=32):
        """Library.index: plan, run the stages, write, sync the index, purge."""
        every = (sampling or SamplingConfig()).every_seconds
        report = self.library.index(
            [str(r) for r in roots], index="flat", regions=regions, every_seconds=every, batch_size=batch_size
        )
        report.embedded = report.frames + report.regions
        self.sync = report.index
        return report

    def search(self, vector, k=10):
        return self.library.search(vector=vector, k=k)

    def embed(self, img):
        cfg = self.encoder.preprocess_cfg
        return self.encoder.encode_images(normalize(resize_crop(img, cfg)[None], cfg))[0]

    def count(self, sql, *args):
        return self.catalog.db.execute(sql, args).fetchone()[0]

    def frames(self, path):
        return self.catalog.db.execute(
            """SELECT d.timestamp FROM detection d JOIN video v ON v.id = d.video_id
               WHERE v.path = ? AND d.kind = 'frame' AND EXISTS (SELECT 1 FROM embedding e WHERE e.detection_id = d.id)
               ORDER BY d.timestamp""",
            (str(path),),
        ).fetchall()

    def consistent(self):
        """Every index entry points at a live embedding and every live embedding is indexed once."""
        row = self.catalog.active_index(self.model.id)
        items = self.catalog.index_items(row.id)
        live = set(self.catalog.live_items(self.model.id))
        assert set(items) == live and not any(stale for _, stale in items.values())
        index = indexes.load_index(row.kind, self.folder / row.path)
        assert len(index) == len(items)


def entry(path) -> FileEntry:
    st = os.stat(path)
    return FileEntry(str(path), st.st_size, st.st_mtime_ns)


def test_query_from_a_known_frame_returns_its_video_and_time(tmp_path, encoder):
    a = make_video(tmp_path / "videos" / "a.mp4", SCENES)
    b = make_video(tmp_path / "videos" / "b.mkv", [(3.0, 10), (3.0, 11)])
    lib = Lib(tmp_path / "lib", encoder)
    report = lib.update([tmp_path / "videos"])
    assert (report.found, report.indexed, report.failed) == (2, 2, [])
    assert report.frames == lib.count("SELECT COUNT(*) FROM detection WHERE kind = 'frame'") == report.embedded
    assert lib.sync.total == report.frames
    # video rows: size, duration, fps from the file
    row = lib.catalog.db.execute(
        "SELECT width, height, duration, fps, frame_count FROM video WHERE path = ?", (str(a),)
    ).fetchone()
    assert (
        row[:2] == (160, 96)
        and row[2] == pytest.approx(10.5, abs=0.15)
        and row[3] == pytest.approx(10.0)
        and row[4] == 105
    )
    for path, t in ((a, 5.5), (a, 9.0), (b, 3.0)):
        q = lib.embed(extract_frame(path, t))
        results = lib.search(q, k=5)
        top = results[0]
        assert top.path == str(path) and top.video_id is not None and top.image_id is None
        assert top.timestamp == pytest.approx(t, abs=1e-6) and top.score > 0.999
        assert top.box is None  # a whole frame
    # merged: adjacent hits of a video are one result with a time range (whether or not
    # run_query already merged them)
    from pixquery.ingest.video import merge_video_hits

    merged = merge_video_hits(lib.search(lib.embed(extract_frame(a, 5.5)), k=50), gap_seconds=3.0)
    best = merged[0]
    assert (
        best.path == str(a) and best.timestamp == pytest.approx(5.5) and best.time_range[0] <= 5.5 <= best.time_range[1]
    )
    assert best.time_range[1] > best.time_range[0]
    for x in merged:
        for y in merged:
            if x is not y and x.video_id == y.video_id:  # runs of one video are > 3 s apart
                assert x.time_range[0] - y.time_range[1] > 3.0 or y.time_range[0] - x.time_range[1] > 3.0


def test_broken_videos_index_what_they_can_and_report_the_rest(tmp_path, encoder):
    folder = tmp_path / "videos"
    good = make_video(folder / "good.mp4", SCENES)
    truncated_copy(good, folder / "cut.mp4", 0.5)
    truncated_copy(make_video(tmp_path / "late.mp4", SCENES, faststart=False), folder / "late_cut.mp4", 0.5)
    (folder / "notes.mp4").write_text("not a video\n")
    (folder / "empty.mov").write_bytes(b"")
    lib = Lib(tmp_path / "lib", encoder)
    report = lib.update([folder])
    failed = dict(report.failed)
    assert report.found == 5 and report.indexed == 2
    assert set(failed) == {str(folder / n) for n in ("cut.mp4", "late_cut.mp4", "notes.mp4", "empty.mov")}
    assert "truncated" in failed[str(folder / "cut.mp4")] and "indexed 00:00:0" in failed[str(folder / "cut.mp4")]
    cut_times = [t for (t,) in lib.frames(folder / "cut.mp4")]
    assert cut_times and max(cut_times) < 8.0
    assert lib.frames(folder / "late_cut.mp4") == []  # nothing written: tried again next run
    assert lib.count("SELECT COUNT(*) FROM video") == 2
    lib.consistent()
    again = lib.update([folder])
    assert again.indexed == 0 and set(dict(again.failed)) == {
        str(folder / n) for n in ("late_cut.mp4", "notes.mp4", "empty.mov")
    }


def test_reindex_after_change_and_delete(tmp_path, encoder):
    folder = tmp_path / "videos"
    a = make_video(folder / "a.mp4", SCENES)
    b = make_video(folder / "b.mp4", [(4.0, 20)])
    lib = Lib(tmp_path / "lib", encoder)
    lib.update([folder])
    old_a = lib.frames(a)
    assert [round(t, 2) for (t,) in old_a] == [0.0, 2.0, 3.0, 5.0, 5.5, 7.5, 9.0]
    q_old = lib.embed(extract_frame(a, 5.5))
    # unchanged: nothing is decoded again
    again = lib.update([folder])
    assert (again.indexed, again.skipped, lib.sync.changed) == (0, 2, False)
    # change a (other scenes, other length), delete b
    time.sleep(0.01)
    make_video(a, [(2.0, 30), (2.0, 31)])
    b.unlink()
    report = lib.update([folder])
    assert (report.indexed, report.removed, report.skipped) == (1, 1, 0)
    assert [round(t, 2) for (t,) in lib.frames(a)] == [0.0, 2.0]
    # old frames and the deleted video are gone from catalog and index
    assert lib.count("SELECT COUNT(*) FROM video") == 1
    assert lib.count("SELECT COUNT(*) FROM detection") == 2
    assert lib.count("SELECT COUNT(*) FROM embedding") == 2
    lib.consistent()
    top = lib.search(q_old, k=5)
    assert {r.path for r in top} == {str(a)} and {r.timestamp for r in top} <= {0.0, 2.0}
    assert lib.search(lib.embed(extract_frame(a, 2.0)), k=1)[0].timestamp == pytest.approx(2.0)
    # sampling settings changed: every video is indexed again with them
    report = lib.update([folder], sampling=SamplingConfig(every_seconds=1.0))
    assert report.indexed == 1 and [round(t, 2) for (t,) in lib.frames(a)] == [0.0, 1.0, 2.0, 3.0]
    lib.consistent()


def test_a_killed_run_never_leaves_half_a_video(tmp_path, encoder):
    """The encoder dies (Ctrl-C) in the second video: the first is complete, the second absent."""
    folder = tmp_path / "videos"
    a = make_video(folder / "a.mp4", SCENES)
    b = make_video(folder / "b.mp4", [(12.0, 5)])

    class Dies:
        def __init__(self, inner, after):
            self.inner, self.calls, self.after = inner, 0, after
            self.preprocess_cfg, self.dim = inner.preprocess_cfg, inner.dim

        def encode_images(self, batch):
            self.calls += 1
            if self.calls > self.after:
                raise KeyboardInterrupt
            return self.inner.encode_images(batch)

    lib = Lib(tmp_path / "lib", encoder)
    dying = Dies(encoder, after=2)  # a: 7 frames = 2 batches of <= 4; b dies in its first batch
    items = [MediaItem(e.path, e.size, e.mtime_ns, VIDEO) for e in (entry(a), entry(b))]
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(
            items,
            dying,
            DecodeSettings(encoder.preprocess_cfg, sampling=SamplingConfig()),
            CatalogWriter(lib.catalog, lib.model.id),
            batch_size=4,
        )
    assert lib.count("SELECT COUNT(*) FROM video") == 1
    assert len(lib.frames(a)) == 7 and lib.frames(b) == []
    report = lib.update([folder])  # the next run does b, and only b
    assert report.indexed == 1 and len(lib.frames(b)) >= 6
    lib.consistent()


def test_second_model_keeps_the_frames_of_the_first(tmp_path, encoder):
    from conftest_models import tiny_model_dir
    from pixquery.encoders.registry import load_encoder

    folder = tmp_path / "videos"
    make_video(folder / "a.mp4", SCENES)
    vit = Lib(tmp_path / "lib", encoder)
    vit.update([folder])
    ids = [r[0] for r in vit.catalog.db.execute("SELECT id FROM detection ORDER BY id")]
    rn50 = Lib(tmp_path / "lib", load_encoder(tiny_model_dir("rn50")))
    report = rn50.update([folder])
    assert report.indexed == 1
    assert [r[0] for r in rn50.catalog.db.execute("SELECT id FROM detection ORDER BY id")] == ids
    assert rn50.count("SELECT COUNT(*) FROM embedding") == 2 * len(ids)
    rn50.consistent()
    vit.update([folder])  # the first model has nothing to redo, its index is unchanged
    assert vit.sync.changed is False
    vit.consistent()


def test_without_pyav_videos_are_reported_not_fatal(tmp_path, encoder, monkeypatch):
    from pixquery.ingest import video as video_mod

    make_video(tmp_path / "videos" / "a.mp4", SCENES[:1])
    monkeypatch.setattr(video_mod, "have_av", lambda: False)
    lib = Lib(tmp_path / "lib", encoder)
    report = lib.update([tmp_path / "videos"])
    assert report.indexed == 0 and "PyAV" in report.failed[0][1]


# -- results and settings -----------------------------------------------------------------


def _hit(rank, score, video_id=None, ts=None, image_id=None, path="x"):
    from pixquery.search import SearchResult

    return SearchResult(
        rank=rank,
        score=score,
        distance=0.0,
        path=path,
        image_id=image_id,
        video_id=video_id,
        detection_id=rank,
        timestamp=ts,
    )


def test_merge_video_hits():
    from pixquery.ingest.video import describe_location, merge_video_hits
    from pixquery.search import Results

    hits = Results(
        [
            _hit(1, 0.9, video_id=1, ts=12.0),
            _hit(2, 0.8, image_id=5),
            _hit(3, 0.7, video_id=1, ts=10.0),
            _hit(4, 0.6, video_id=1, ts=14.0),
            _hit(5, 0.5, video_id=2, ts=12.0),
            _hit(6, 0.4, video_id=1, ts=60.0),
            _hit(7, 0.3, video_id=1, ts=16.5),
            _hit(8, 0.2, video_id=1, ts=63.0),
        ],
        dropped=3,
        threshold=0.4,
    )
    merged = merge_video_hits(hits, gap_seconds=3.0)
    assert isinstance(merged, Results) and (merged.dropped, merged.threshold) == (3, 0.4)
    got = [(r.rank, r.score, r.video_id, r.timestamp, r.time_range) for r in merged]
    assert got == [
        (1, 0.9, 1, 12.0, (10.0, 16.5)),  # 10, 12, 14, 16.5: one run, its best hit's time and score
        (2, 0.8, None, None, None),  # photos pass through
        (3, 0.5, 2, 12.0, (12.0, 12.0)),  # another video is another result
        (4, 0.4, 1, 60.0, (60.0, 63.0)),  # the same video 44 s later is another result
    ]
    assert hits[0].time_range is None and hits[0].rank == 1  # the input is not changed
    assert len(merge_video_hits(hits, gap_seconds=100.0)) == 3
    assert merge_video_hits([], 3.0) == []
    r = merged[0]
    r.path = "/v/cam.mp4"
    assert describe_location(r) == "/v/cam.mp4 @ 00:00:12 (00:00:10-00:00:16)"
    r.box = (0.1, 0.2, 0.5, 0.6)
    assert describe_location(r).endswith("[box 0.10,0.20,0.50,0.60]")


def test_settings_are_kept_between_runs(tmp_path, encoder):
    from pixquery.ingest.regions import choose_config
    from pixquery.ingest.video import choose_sampling, merge_gap_for, saved_sampling

    lib = Lib(tmp_path / "lib", encoder)
    assert saved_sampling(lib.catalog) is None and merge_gap_for(lib.catalog) == 3.0
    assert choose_sampling(lib.catalog) == SamplingConfig()
    make_video(tmp_path / "v" / "a.mp4", SCENES[:2])
    lib.update([tmp_path / "v"], sampling=choose_sampling(lib.catalog, every_seconds=4.0, scene_threshold=None))
    assert saved_sampling(lib.catalog).every_seconds == 4.0 and merge_gap_for(lib.catalog) == 6.0
    assert choose_sampling(lib.catalog).every_seconds == 4.0  # a plain run keeps the library's
    # regions: None keeps what the library has (off here), True turns them on, False off
    assert choose_config(lib.catalog) is None and choose_config(lib.catalog, True).grids == (2, 3)
    assert choose_config(lib.catalog, False, detector="d.onnx") is None
    assert choose_config(lib.catalog, detector="d.onnx").detector == "d.onnx"


def test_deleting_frames_does_not_scan_every_embedding(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    for table in ("detection", "image"):
        plan = " / ".join(r[3] for r in cat.db.execute(f"EXPLAIN QUERY PLAN DELETE FROM {table} WHERE id = 1"))
        assert "SCAN embedding" not in plan, (table, plan)
