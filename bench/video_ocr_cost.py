"""What `index --ocr` costs on a video: indexing a short video with and without reading the text
in its frames, side by side, and how many text rows the runs of frames save.

    python bench/video_ocr_cost.py --model /work/main/models/random-vit-b-32 --rounds 3

Makes one video with PyAV (libx264, 1280x720, 30 fps, --seconds long): a real photo from
../shared/data (a synthetic picture without it) per 10 s scene, slowly panning, a small station
logo in a corner the whole time, and a caption in the middle third. Each round indexes it into
fresh libraries, one after the other (so the load of a shared machine falls on both alike):
without OCR, and with `--ocr` (each kept frame read in the video's decode process). Speed ratio =
seconds without / seconds with. Then it reads the kept frames once more, in this process, to count
the lines read frame by frame against the rows stored (one per line and run of frames).
Full-size random weights (scripts/make_tiny_models.py --full): speed does not depend on weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, markdown  # noqa: E402

from pixquery.api import Library  # noqa: E402
from pixquery.ingest.ocr import OcrConfig, TextReader  # noqa: E402
from pixquery.ingest.video import SamplingConfig, sample_frames  # noqa: E402

SHARED_PHOTOS = ROOT.parent / "shared" / "data" / "imagenet-sample-images" / "images"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
SIZE = (1280, 720)


def _backgrounds(n: int) -> list[Image.Image]:
    files = sorted(SHARED_PHOTOS.glob("*.JPEG"))[:n] if SHARED_PHOTOS.is_dir() else []
    if files:
        return [Image.open(f).convert("RGB").resize((SIZE[0] + 200, SIZE[1] + 120)) for f in files]
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (SIZE[1] + 120, SIZE[0] + 200, 3), dtype=np.uint8)).resize(
            (SIZE[0] + 200, SIZE[1] + 120)
        )
        for _ in range(n)
    ]


def make_video(path: Path, seconds: float, fps: int = 30) -> None:
    import av

    scenes = _backgrounds(int(np.ceil(seconds / 10)))
    font = ImageFont.truetype(str(FONT), 64) if FONT.exists() else ImageFont.load_default(64)
    small = ImageFont.truetype(str(FONT), 28) if FONT.exists() else ImageFont.load_default(28)
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast"}
        for n in range(int(seconds * fps)):
            t = n / fps
            bg = scenes[int(t // 10)]
            dx = int(200 * ((t % 10) / 10))  # a slow pan
            img = bg.crop((dx, 60, dx + SIZE[0], 60 + SIZE[1]))
            draw = ImageDraw.Draw(img)
            draw.text((1060, 30), "PXQ TV", font=small, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
            if seconds / 3 <= t < 2 * seconds / 3:
                draw.text(
                    (120, 560),
                    "RIVER FLOODS 2024",
                    font=font,
                    fill=(255, 230, 0),
                    stroke_width=3,
                    stroke_fill=(0, 0, 0),
                )
            arr = np.asarray(img).astype(np.int16) + rng.integers(-3, 4, (SIZE[1], SIZE[0], 1), dtype=np.int16)
            frame = av.VideoFrame.from_ndarray(np.clip(arr, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts = n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pixquery-video-ocr-cost-"))
    folder = work / "video"
    folder.mkdir()
    make_video(folder / "news.mp4", args.seconds)
    config = OcrConfig()
    with Library.open(work / "warm-up", model=args.model) as lib:  # file cache, model files, imports
        lib.index([folder], ocr=config)
    times: dict[str, list[float]] = {"none": [], "ocr": []}
    load0 = os.getloadavg()
    report = None
    for r in range(args.rounds):
        for mode in times:
            with Library.open(work / f"{mode}{r}", model=args.model) as lib:
                t = time.perf_counter()
                rep = lib.index([folder], ocr=config if mode == "ocr" else False)
                times[mode].append(time.perf_counter() - t)
                assert rep.videos == 1 and not rep.failed, rep.failed
                if mode == "ocr":
                    report = rep
                    rows = lib.catalog.ocr_video_counts()[1]
            print(f"round {r + 1} {mode}: {times[mode][-1]:.2f}s", flush=True)
    load1 = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    # Lines read frame by frame, against the rows the runs stored.
    reader = TextReader(config.resolved())
    frames = read = 0
    for frame in sample_frames(folder / "news.mp4", SamplingConfig()):
        frames += 1
        read += len(reader.read(frame.image))
    assert report is not None
    print(
        f"\n{args.seconds:.0f} s video, {SIZE[0]}x{SIZE[1]} 30 fps, {report.frames} frames kept, model {args.model}, "
        f"OCR {config.to_json()}, {args.rounds} rounds (medians); load average {load0[0]:.1f} before, {load1[0]:.1f} after\n"
    )
    print("| indexing | seconds | speed vs without OCR |")
    print("|---|---|---|")
    print(f"| without OCR | {med['none']:.2f} | 1.00 |")
    print(f"| --ocr (frames read in the video's decode process) | {med['ocr']:.2f} | {med['none'] / med['ocr']:.2f} |")
    per_round = [a / b for a, b in zip(times["none"], times["ocr"])]
    print(f"\nround by round: {', '.join(f'{x:.2f}' for x in per_round)}")
    print(
        f"\nreading text: {report.ocr_video_seconds / max(report.text_video_frames, 1) * 1000:.0f} ms per frame "
        f"({report.text_video_frames} frames, in the decode process); lines read frame by frame: {read} "
        f"over {frames} frames; text rows stored (one per line and run of frames): {rows}"
    )
    print(markdown(describe(("numpy", "pillow", "onnxruntime", "rapidocr", "rapidocr-onnxruntime", "av"))))


if __name__ == "__main__":
    main()
