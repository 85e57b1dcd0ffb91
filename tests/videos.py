"""Makes real video files for tests: scenes with known content that switch at known times.

Each scene is a distinct smooth random "photo" (tests/photos.py) with a small square moving
across it, so consecutive frames of one scene differ a little (as real footage does) while a
scene change is a big jump. Encoded with PyAV (h264 by default, mpeg4 / vp9 / mjpeg too), low
resolution and a low frame rate so that a test video costs milliseconds to make and decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from photos import photo

# container suffix -> (codec, pixel format)
CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".ts": ("libx264", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
}


@dataclass(frozen=True)
class Scene:
    seconds: float
    seed: int  # which background picture
    motion: bool = True  # a small square moves across the scene


def scene_frame(seed: int, size: tuple[int, int], t: float = 0.0, motion: bool = True) -> np.ndarray:
    """The (H, W, 3) uint8 picture of scene `seed` at `t` seconds into the scene."""
    w, h = size
    arr = np.array(photo((w, h), seed=1000 + seed))
    if motion:
        side = max(4, h // 10)
        x = int((w - side) * ((t * 0.2) % 1.0))
        y = h // 2 - side // 2
        arr[y : y + side, x : x + side] = (255, 255, 255)
    return arr


def make_video(
    path: str | Path,
    scenes: Sequence[Scene | tuple[float, int]],
    *,
    fps: int = 10,
    size: tuple[int, int] = (160, 96),
    codec: str | None = None,
    gop: int | None = None,
    faststart: bool = True,
) -> Path:
    """Write a video of `scenes` (each `Scene(seconds, seed)` or `(seconds, seed)`), back to back.

    Returns the path. Scene i starts at sum(seconds of scenes before it). `faststart` puts the
    MP4 index (moov) first, so a truncated copy still opens (as a phone's or a camera's file
    does); without it a truncated MP4 cannot be opened at all.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scenes = [s if isinstance(s, Scene) else Scene(*s) for s in scenes]
    suffix = path.suffix.lower()
    default_codec, pix_fmt = CODECS.get(suffix, ("libx264", "yuv420p"))
    codec = codec or default_codec
    options = {"movflags": "+faststart"} if faststart and suffix in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.time_base = Fraction(1, fps)
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency"} if gop is None else {"preset": "ultrafast"}
        n = 0
        for scene in scenes:
            for i in range(int(round(scene.seconds * fps))):
                arr = scene_frame(scene.seed, size, i / fps, scene.motion)
                frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
                frame.pts = n
                n += 1
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def scene_starts(scenes: Sequence[Scene | tuple[float, int]]) -> list[float]:
    """Start time (seconds) of each scene."""
    starts, t = [], 0.0
    for s in scenes:
        starts.append(t)
        t += s.seconds if isinstance(s, Scene) else s[0]
    return starts


def truncated_copy(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """The first `fraction` of the bytes of `src` (a download or a copy cut short)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def corrupted_copy(src: str | Path, dst: str | Path, start: float = 0.4, length: float = 0.2, seed: int = 0) -> Path:
    """`src` with a stretch of its bytes (from `start`, `length` of the file) overwritten by noise."""
    data = bytearray(Path(src).read_bytes())
    a, n = int(len(data) * start), int(len(data) * length)
    data[a : a + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def rotated_copy(src: str | Path, dst: str | Path) -> Path:
    """An MP4 copy of `src` whose track matrix says "turn 90 degrees clockwise to show", as phones
    write portrait video (the pixels stay stored landscape). `src` must be an MP4 or MOV."""
    import struct

    data = bytearray(Path(src).read_bytes())
    i = data.find(b"tkhd")
    assert i > 0, "no tkhd box: not an MP4/MOV"
    version = data[i + 4]
    # version, flags | times, track id, reserved, duration | reserved (8) | layer, group, volume, reserved
    off = i + 4 + 4 + (8 + 8 + 4 + 4 + 8 if version == 1 else 4 * 5) + 8 + 8
    data[off : off + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def make_text_video(
    path: str | Path,
    word: str | None,
    shown: tuple[float, float] = (4.0, 8.0),
    *,
    seconds: float = 12.0,
    fps: int = 5,
    size: tuple[int, int] = (320, 192),
    seed: int = 0,
) -> tuple[Path, tuple[float, float, float, float] | None]:
    """A video of one background picture (a small square moving on it) with `word` written on it
    (yellow, black outline, readable) from shown[0] to shown[1] seconds, plain frames elsewhere.
    Returns the path and the word's relative box (None without a word)."""
    import av
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    font = ImageFont.truetype(str(FONT), h // 5) if FONT.exists() else ImageFont.load_default(h // 5)
    xy = (w // 10, h // 3)
    box = None
    if word:
        probe = ImageDraw.Draw(Image.new("RGB", size))
        x0, y0, x1, y1 = probe.textbbox(xy, word, font=font, stroke_width=2)
        box = (x0 / w, y0 / h, x1 / w, y1 / h)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for n in range(int(round(seconds * fps))):
            t = n / fps
            img = Image.fromarray(scene_frame(seed, size, t))
            if word and shown[0] <= t < shown[1]:
                ImageDraw.Draw(img).text(xy, word, font=font, fill=(255, 230, 0), stroke_width=2, stroke_fill=(0, 0, 0))
            frame = av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")
            frame.pts = n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path, box
