"""`pixquery video info | frames | frame`, through the real command in a subprocess."""

from __future__ import annotations

import json

import pytest
from PIL import Image

pytest.importorskip("av", reason="video tests need PyAV (the [video] extra)")

from clirun import pixquery  # noqa: E402
from videos import make_video  # noqa: E402

SCENES = [(3.0, 0), (2.5, 1), (2.0, 2)]


def test_video_commands(tmp_path):
    video = make_video(tmp_path / "clip.mp4", SCENES)
    (tmp_path / "bad.mp4").write_text("nope")

    r = pixquery("video", "info", video, tmp_path / "bad.mp4")
    assert r.returncode == 1
    assert f"{video}: 00:00:07, 10 fps, 160x96, h264, 75 frames" in r.stdout
    assert "bad.mp4: not a readable video" in r.stderr

    r = pixquery("video", "frames", video, "--json", "--save", tmp_path / "frames")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [(f["timestamp"], f["why"]) for f in data["frames"]] == [
        (0.0, "clock"),
        (2.0, "clock"),
        (3.0, "cut"),
        (5.0, "clock"),
        (5.5, "cut"),
    ]
    assert data["summary"]["cuts"] == 2 and data["summary"]["frames"] == 75
    assert all(Image.open(f["file"]).size == (160, 96) for f in data["frames"])

    r = pixquery("video", "frames", video, "--every", "0")
    assert r.returncode == 0 and "00:00:03 (    3.000 s)  cut" in r.stdout and "3 frames sampled" in r.stdout

    r = pixquery("video", "frame", video, "00:00:05.5", "-o", tmp_path / "hit.png")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "hit.png").size == (160, 96)
    r = pixquery("video", "frame", video, "soon", "-o", tmp_path / "x.png")
    assert r.returncode != 0 and "not a time" in r.stderr + r.stdout
