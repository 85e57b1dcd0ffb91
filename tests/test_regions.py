"""Regions: tile geometry, the ONNX detector plug-in (a tiny detector built here with onnx.helper),
region embeddings of photos and video frames stored as detections, found with their boxes.

Real ONNX Runtime, real SQLite, the real Library for the photos themselves.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from photos import make_photos, photo
from pixquery.errors import PixqueryError
from pixquery.ingest.crops import FULL_BOX, RegionConfig, crop, regions_of, square_box, tiles

# -- geometry -----------------------------------------------------------------------------


def _covered(boxes, w, h):
    grid = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        grid[int(round(y0 * h)) : int(round(y1 * h)), int(round(x0 * w)) : int(round(x1 * w))] = True
    return grid.all()


@pytest.mark.parametrize(
    "size,grid,shape",
    [
        ((300, 300), 2, (2, 2)),
        ((300, 300), 3, (3, 3)),
        ((400, 300), 2, (3, 2)),
        ((400, 300), 3, (5, 3)),
        ((1920, 1080), 2, (4, 2)),
        ((1080, 1920), 2, (2, 4)),
        ((1920, 1080), 3, (6, 3)),
    ],
)
def test_square_tiles_cover_the_picture_with_overlap(size, grid, shape):
    w, h = size
    boxes = tiles(w, h, grids=(grid,), overlap=0.25)
    cols, rows = shape
    assert len(boxes) == cols * rows
    side = min(w, h) / (grid - (grid - 1) * 0.25)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert (x1 - x0) * w == pytest.approx(side, abs=0.01) and (y1 - y0) * h == pytest.approx(side, abs=0.01)
    assert _covered(boxes, w, h)
    # neighbours along a row share at least the overlap
    row = sorted(b for b in boxes if b[1] == boxes[0][1])
    for a, b in zip(row, row[1:]):
        assert (a[2] - b[0]) * w >= 0.25 * side - 0.01
    assert boxes[0][:2] == (0.0, 0.0) and max(b[2] for b in boxes) == 1.0 and max(b[3] for b in boxes) == 1.0


def test_explicit_grid_and_small_pictures():
    boxes = tiles(400, 300, grids=((2, 2),), overlap=0.25)
    assert len(boxes) == 4
    assert boxes[0] == pytest.approx((0.0, 0.0, 1 / 1.75, 1 / 1.75), abs=1e-5)
    assert _covered(boxes, 400, 300)
    # both default grids on a 4:3 photo: 6 + 15
    assert len(tiles(400, 300)) == 21
    # tiles smaller than min_pixels are not made
    assert len(tiles(100, 80, grids=(2, 3), min_pixels=48)) == 0
    assert len(tiles(120, 90, grids=(2, 3), min_pixels=48)) == 6
    with pytest.raises(ValueError):
        RegionConfig(grids=(0,))
    with pytest.raises(ValueError):
        RegionConfig(overlap=1.0)


def test_square_box_and_crop():
    # a tall box grows to a square around its centre, clipped inside the picture
    assert square_box((0.45, 0.1, 0.55, 0.9), 200, 100) == pytest.approx((0.3, 0.1, 0.7, 0.9))
    assert square_box((0.0, 0.0, 0.1, 0.5), 200, 100) == pytest.approx((0.0, 0.0, 0.25, 0.5))
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.paste((255, 0, 0), (100, 0, 200, 100))
    from pixquery.encoders.base import PreprocessConfig

    px = crop(img, (0.5, 0.0, 1.0, 1.0), PreprocessConfig(size=32))
    assert px.shape == (32, 32, 3) and px[..., 0].min() > 200 and px[..., 1].max() < 30


def test_region_config_round_trip():
    cfg = RegionConfig(grids=(2, (3, 2)), overlap=0.3)
    assert RegionConfig.from_json(cfg.to_json()) == cfg
    assert RegionConfig.from_json("null") is None


# -- the detector plug-in -----------------------------------------------------------------

BOXES = [[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]]


def make_tiny_detector(path, *, names=("boxes", "scores", "labels"), pixels=False, class_scores=False, static=True):
    """A real ONNX detector: three fixed boxes whose scores depend on the picture's brightness
    (bright: boxes 0 and 1 score high; dark: box 2), so `detect` must run the model to be right."""
    import onnx
    from onnx import TensorProto, helper

    h = w = 64
    shape = [1, 3, h, w] if static else [1, 3, "height", "width"]
    boxes = np.array(BOXES, np.float32) * (np.array([w, h, w, h], np.float32) if pixels else 1)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "w"], ["wx"]),
        helper.make_node("Add", ["wx", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["s"]),
        helper.make_node(
            "Constant", [], [names[0]], value=helper.make_tensor("bv", TensorProto.FLOAT, [3, 4], boxes.flatten())
        ),
    ]
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [3], [10, 10, -10]),
        helper.make_tensor("b", TensorProto.FLOAT, [3], [-5, -8, 5]),
    ]
    outputs = [helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [3, 4])]
    if class_scores:  # (N, C): per-class scores, the class with the max wins
        nodes.append(helper.make_node("Unsqueeze", ["s", "ax"], ["s1"]))
        nodes.append(helper.make_node("Concat", ["s1", "half"], [names[1]], axis=1))
        inits += [
            helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
            helper.make_tensor("half", TensorProto.FLOAT, [3, 1], [0.5, 0.5, 0.5]),
        ]
        outputs.append(helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [3, 2]))
    else:
        nodes.append(helper.make_node("Identity", ["s"], [names[1]]))
        outputs.append(helper.make_tensor_value_info(names[1], TensorProto.FLOAT, [3]))
        nodes.append(
            helper.make_node(
                "Constant", [], [names[2]], value=helper.make_tensor("lv", TensorProto.INT64, [3], [2, 0, 1])
            )
        )
        outputs.append(helper.make_tensor_value_info(names[2], TensorProto.INT64, [3]))
    graph = helper.make_graph(
        nodes, "tiny_detector", [helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


BRIGHT = Image.new("RGB", (120, 90), (240, 240, 230))
DARK = Image.new("RGB", (120, 90), (10, 20, 10))


def test_onnx_detector_runs_the_model(tmp_path):
    from pixquery.ingest.detector import Detector, OnnxDetector

    det = OnnxDetector(make_tiny_detector(tmp_path / "det.onnx"), labels=["cat", "cup", "dog"])
    assert isinstance(det, Detector) and det.size == (64, 64)
    bright = sorted(det.detect(BRIGHT), key=lambda d: -d.score)
    assert [d.label for d in bright] == ["dog", "cat", "cup"]
    assert bright[0].box == pytest.approx(tuple(BOXES[0])) and bright[0].score > 0.95 and bright[2].score < 0.05
    dark = sorted(det.detect(DARK), key=lambda d: -d.score)
    assert dark[0].label == "cup" and dark[0].box == pytest.approx((0.0, 0.0, 1.0, 1.0)) and dark[0].score > 0.9


def test_onnx_detector_conventions(tmp_path):
    from pixquery.ingest.detector import load_detector

    # pixel boxes, unnamed outputs (by position), per-class scores, a symbolic input size, a
    # labels file beside the model
    path = make_tiny_detector(
        tmp_path / "yolo.onnx", names=("out0", "out1", "-"), pixels=True, class_scores=True, static=False
    )
    (tmp_path / "labels.txt").write_text("person\nbackground\n")
    det = load_detector(f"onnx:{path}", input_size=(64, 64))
    found = sorted(det.detect(BRIGHT), key=lambda d: -d.score)
    assert found[0].box == pytest.approx(tuple(BOXES[0]), abs=1e-6)
    assert found[0].label == "person" and found[-1].label == "background"  # 0.018 < 0.5: class 1 wins
    with pytest.raises(PixqueryError, match="not found"):
        load_detector(tmp_path / "missing.onnx")
    with pytest.raises(PixqueryError, match=r"\.onnx"):
        load_detector(tmp_path / "model.pt")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(PixqueryError, match="not a usable ONNX model"):
        load_detector(tmp_path / "junk.onnx")


def test_regions_of_a_picture(tmp_path):
    from pixquery.ingest.detector import OnnxDetector

    det = OnnxDetector(make_tiny_detector(tmp_path / "det.onnx"))
    cfg = RegionConfig(grids=(2,), min_score=0.5, max_detections=1)
    regions = regions_of(BRIGHT, cfg, det, timestamp=4.0)
    assert [r.kind for r in regions] == ["tile"] * 6 + ["detector"]
    assert regions[-1].box == pytest.approx(tuple(BOXES[0])) and regions[-1].label == "2"  # no labels: the id
    assert all(r.timestamp == 4.0 for r in regions)
    assert regions_of(BRIGHT, None, det) == []


# -- photos in a library ------------------------------------------------------------------


def _library(tmp_path, tiny_model):
    from pixquery.api import Library

    return Library.open(tmp_path / "lib", model=str(tiny_model))


def _embed(lib, img, box=FULL_BOX):
    from pixquery.ingest.decode import normalize

    cfg = lib.encoder.preprocess_cfg
    return lib.encoder.encode_images(normalize(crop(img, box, cfg)[None], cfg))[0]


def _count(lib, sql, *args):
    return lib.catalog.db.execute(sql, args).fetchone()[0]


def test_photo_regions_are_found_with_their_box(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    make_photos(folder, 3, size=(400, 300))
    big = photo((640, 480), seed=50)
    big.paste(photo((200, 200), seed=77), (420, 260))  # a small distinct thing, bottom right
    big.save(folder / "table.jpg", quality=95)
    lib = _library(tmp_path, tiny_model)
    lib.index([folder])
    detector = make_tiny_detector(tmp_path / "det.onnx")
    report = lib.index(regions=RegionConfig(grids=(2, 3), detector=str(detector), min_score=0.5))
    assert (report.indexed, report.failed) == (0, [])  # the photos are not embedded again, only cut
    # 4:3 photos: 6 + 15 tiles each; the detector sees bright-ish photos as 'dark' or 'bright'
    tiles_per_photo = _count(lib, "SELECT COUNT(*) FROM detection WHERE kind = 'tile'") / 4
    assert tiles_per_photo == 21
    assert _count(lib, "SELECT COUNT(*) FROM detection WHERE kind = 'detector'") >= 4
    assert report.regions == _count(lib, "SELECT COUNT(*) FROM detection")
    assert report.index.total == 4 + report.regions
    # the tile holding the small thing finds its photo, with that box
    loaded = Image.open(folder / "table.jpg").convert("RGB")
    boxes = tiles(640, 480, grids=(2,))
    box = next(b for b in boxes if b[0] * 640 <= 420 and b[1] * 480 <= 260 and b[2] * 640 >= 620 and b[3] * 480 >= 460)
    results = lib.search(vector=_embed(lib, loaded, box), k=3)
    assert results[0].path == str(folder / "table.jpg") and results[0].box == pytest.approx(box, abs=1e-5)
    assert results[0].score > 0.999 and results[0].detection_id is not None
    assert len({r.path for r in results}) == len(results)  # one result per photo, regions included
    # a second run has nothing to do
    again = lib.index()
    assert (again.indexed, again.regions) == (0, 0) and again.index.total == report.index.total


def test_a_photo_is_decoded_once_for_itself_and_its_regions(tmp_path, tiny_model, monkeypatch):
    """New photos with regions on: one decode each gives the whole picture and all its tiles."""
    from pixquery.ingest import workers

    folder = tmp_path / "photos"
    make_photos(folder, 3, size=(400, 300))
    calls = []
    real = workers.load
    monkeypatch.setattr(workers, "load", lambda *a, **kw: calls.append(kw.get("name")) or real(*a, **kw))
    lib = _library(tmp_path, tiny_model)
    import pixquery.ingest.executors.local as local

    monkeypatch.setattr(local, "DEFAULT_DECODER", "thread")  # the counting patch lives in this process
    report = lib.index([folder], regions=RegionConfig(grids=(2,)))
    assert (report.indexed, report.regions) == (3, 3 * 6)
    assert sorted(calls) == sorted(str(p) for p in folder.glob("*.jpg"))


def test_photo_regions_follow_changes_and_settings(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    paths = make_photos(folder, 3, size=(300, 300))
    lib = _library(tmp_path, tiny_model)
    two = RegionConfig(grids=(2,))
    report = lib.index([folder], regions=two)
    assert report.index.total == 3 + 12 and _count(lib, "SELECT COUNT(*) FROM detection") == 12
    # a photo changes: it and its regions are made again; the others keep theirs
    photo((300, 300), seed=99).save(paths[0])
    os.utime(paths[0], ns=(10**18, 10**18))
    report = lib.index()
    assert (report.indexed, report.regions) == (1, 4)
    assert (report.index.added, report.index.removed) == (1 + 4, 1 + 4)
    assert _count(lib, "SELECT COUNT(*) FROM detection") == 12
    new_tile = _embed(lib, Image.open(paths[0]).convert("RGB"), tiles(300, 300, (2,))[3])
    assert lib.search(vector=new_tile, k=1)[0].path == str(paths[0])
    # other settings: every photo's regions are made again; regions off: all dropped
    report = lib.index(regions=RegionConfig(grids=(3,)))
    assert (report.indexed, report.regions) == (0, 27)
    assert _count(lib, "SELECT COUNT(*) FROM detection") == 27
    report = lib.index(regions=False)
    assert report.index.total == 3 and _count(lib, "SELECT COUNT(*) FROM detection") == 0
    # deleted photos take their regions with them (soft delete, sync, purge)
    lib.index(regions=two)
    paths[1].unlink()
    report = lib.index()
    assert report.index.total == 2 + 8 and _count(lib, "SELECT COUNT(*) FROM detection") == 8


def test_tiny_photos_get_a_marker_region(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    make_photos(folder, 2, size=(64, 64))
    lib = _library(tmp_path, tiny_model)
    lib.index([folder])
    report = lib.index(regions=True)
    assert report.regions == 2  # one whole-photo region each, the photo's own picture
    assert lib.index().regions == 0


# -- video frames -------------------------------------------------------------------------


def test_video_frame_tiles_and_detections(tmp_path, tiny_model):
    pytest.importorskip("av")
    from pixquery.ingest.video import extract_frame, merge_video_hits
    from videos import make_video

    lib = _library(tmp_path, tiny_model)
    lib.index([make_photos(tmp_path / "photos", 1)[0]])
    video = make_video(tmp_path / "videos" / "v.mp4", [(3.0, 0), (3.0, 1)], size=(192, 108))
    cfg = RegionConfig(grids=(2,), detector=str(make_tiny_detector(tmp_path / "det.onnx")), min_score=0.5)
    report = lib.index([tmp_path / "videos"], regions=cfg)
    assert report.frames == 4  # 0, 2, 3 (cut), 5
    rows = lib.catalog.db.execute(
        "SELECT kind, COUNT(*), COUNT(DISTINCT timestamp) FROM detection WHERE video_id IS NOT NULL GROUP BY kind"
    ).fetchall()
    counts = {k: (n, t) for k, n, t in rows}
    assert counts["frame"] == (4, 4) and counts["tile"] == (4 * 8, 4)  # 16:9 at 2: 4x2 tiles a frame
    assert counts["detector"][1] == 4
    assert report.regions == counts["tile"][0] + counts["detector"][0]  # the photo is not under this root
    frame = extract_frame(video, 3.0)
    box = tiles(192, 108, (2,))[5]
    results = merge_video_hits(lib.search(vector=_embed(lib, frame, box), k=5))
    top = results[0]
    assert top.path == str(video) and top.timestamp == pytest.approx(3.0) and top.box == pytest.approx(box, abs=1e-5)
    assert top.time_range[0] <= 3.0 <= top.time_range[1]
    # the video goes: its frames and regions leave the index and the catalog
    video.unlink()
    report = lib.index()
    assert report.index.total == 1 and _count(lib, "SELECT COUNT(*) FROM detection") == 0
    assert _count(lib, "SELECT COUNT(*) FROM video") == 0
