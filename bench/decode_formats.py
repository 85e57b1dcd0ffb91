"""Decode speed per photo format on the decode workers: HEIC, AVIF, RAW (embedded preview and
half-size demosaic) next to JPEG, 12 MP pictures (4032x3024, an iPhone's).

    flock /tmp/pixquery-bench.lock python bench/decode_formats.py [--photos 4] [--rounds 3]

Writes the same pictures in each format: real photos from ../shared/data when it is there (else
synthetic ones), enlarged to 12 MP with a little sensor-like noise so that the codecs work as hard
as on a camera's picture: JPEG quality 90 (a phone's), HEIC quality 80 (pillow-heif / x265)
without a thumbnail (decoded in full) and with a 320x240 one (as phones store: it is the draft),
AVIF quality 80 (Pillow / libavif), DNG with a full-size JPEG preview (as cameras embed one) and
DNG without one (Android's DNGs have only a small thumbnail: LibRaw demosaics at half size).

Measures the worker's whole job per file (`ingest.workers.decode_photo`: read, hash, decode at
the scale the crops need, the 224 px crop, normalise), in a pool of --workers forkserver processes
as the local executor runs them: images/s, and the ratio to JPEG. Best of --rounds interleaved
rounds (the machine may be shared). Results: bench/results/decode-formats.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
from machine import describe, markdown  # noqa: E402

SIZE = (4032, 3024)
SHARED = ROOT.parent / "shared" / "data" / "imagenet-sample-images" / "images"
FORMATS = ["JPEG", "HEIC", "HEIC thumbnail", "AVIF", "RAW preview", "RAW demosaic"]


def pictures(n: int, noise: float = 3.0) -> list[Image.Image]:
    sources = sorted(SHARED.glob("*.JPEG"))[:n] if SHARED.is_dir() else []
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        if i < len(sources):
            img = Image.open(sources[i]).convert("RGB")
        else:
            from photos import photo

            img = photo((640, 480), seed=i)
        img = img.resize(SIZE, Image.Resampling.BICUBIC)
        noisy = np.asarray(img, np.float32) + rng.normal(0, noise, (SIZE[1], SIZE[0], 3))
        out.append(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))
    return out


def write_files(folder: Path, imgs: list[Image.Image], wanted: list[str]) -> dict[str, list[Path]]:
    import pillow_heif

    from photo_formats import dng

    pillow_heif.register_heif_opener()
    files: dict[str, list[Path]] = {f: [] for f in FORMATS}
    for i, img in enumerate(imgs):
        if "JPEG" not in wanted:
            raise SystemExit("JPEG is the reference: keep it in --formats")
        p = folder / f"p{i}.jpg"
        img.save(p, "JPEG", quality=90)
        files["JPEG"].append(p)
        if "HEIC" in wanted:
            p = folder / f"p{i}.heic"
            img.save(p, format="HEIF", quality=80, thumbnails=[])
            files["HEIC"].append(p)
        if "HEIC thumbnail" in wanted:
            p = folder / f"p{i}-thumb.heic"  # with a 320x240 thumbnail inside, as phones store one
            img.save(p, format="HEIF", quality=80, thumbnails=[320])
            files["HEIC thumbnail"].append(p)
        if "AVIF" in wanted:
            p = folder / f"p{i}.avif"
            img.save(p, format="AVIF", quality=80, speed=8)
            files["AVIF"].append(p)
        if "RAW preview" in wanted:
            files["RAW preview"].append(dng(folder / f"p{i}-preview.dng", img, preview=img))
        if "RAW demosaic" in wanted:
            files["RAW demosaic"].append(dng(folder / f"p{i}-bare.dng", img))
    return {f: ps for f, ps in files.items() if f in wanted}


def _decode(path: str) -> float:
    from pixquery.encoders.base import PreprocessConfig
    from pixquery.ingest.items import DecodeSettings, MediaItem
    from pixquery.ingest.workers import decode_photo

    st = os.stat(path)
    t = time.perf_counter()
    piece = decode_photo(MediaItem(path, st.st_size, st.st_mtime_ns), DecodeSettings(PreprocessConfig()))
    if piece.failure:
        raise RuntimeError(f"{path}: {piece.failure}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=4, help="distinct pictures per format")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--formats", nargs="+", default=FORMATS, choices=FORMATS)
    ap.add_argument("--noise", type=float, default=3.0, help="sensor-like noise (std of 0..255 values) added")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "decode-formats"))
    args = ap.parse_args()
    wanted = [f for f in FORMATS if f in args.formats]
    machine = describe(("numpy", "pillow", "pillow-heif", "rawpy"))
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        files = write_files(Path(tmp), pictures(args.photos, args.noise), wanted)
        print(
            f"wrote {args.photos} pictures in {len(wanted)} formats in {time.perf_counter() - t:.0f}s", file=sys.stderr
        )
        sizes = {f: float(np.mean([p.stat().st_size for p in ps])) for f, ps in files.items()}
        best: dict[str, float] = {}
        per_image: dict[str, list[float]] = {f: [] for f in wanted}
        ctx = mp.get_context("forkserver")
        with ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
            list(pool.map(_decode, [str(p) for ps in files.values() for p in ps]))  # warm: imports, plugins
            for _ in range(args.rounds):
                for fmt in wanted:
                    paths = [str(p) for p in files[fmt]] * args.workers  # every worker busy
                    t = time.perf_counter()
                    seconds = list(pool.map(_decode, paths))
                    rate = len(paths) / (time.perf_counter() - t)
                    best[fmt] = max(best.get(fmt, 0.0), rate)
                    per_image[fmt] += seconds
    rows = [
        {
            "format": f,
            "images_per_s": round(best[f], 2),
            "vs_jpeg": round(best[f] / best["JPEG"], 3),
            "median_ms_per_image": round(1000 * float(np.median(per_image[f])), 1),
            "file_mb": round(sizes[f] / 1e6, 2),
        }
        for f in wanted
    ]
    result = {
        "machine": machine,
        "size": SIZE,
        "photos": args.photos,
        "noise": args.noise,
        "rounds": args.rounds,
        "workers": args.workers,
        "source": "shared ImageNet photos, enlarged" if SHARED.is_dir() else "synthetic",
        "rows": rows,
    }
    Path(args.out + ".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Decode speed per format, {SIZE[0]}x{SIZE[1]} (12 MP), on {args.workers} decode workers",
        "",
        markdown(machine),
        "",
        f"`python bench/decode_formats.py --photos {args.photos} --rounds {args.rounds} --workers {args.workers} "
        f"--noise {args.noise:g}"
        + (f" --formats {' '.join(repr(f) for f in wanted)}" if wanted != FORMATS else "")
        + "`; "
        f"best of {args.rounds} interleaved rounds; the worker's whole job per file (read, hash, decode, "
        "224 px crop, normalise); pictures: " + result["source"] + f" with sensor-like noise (std {args.noise:g}).",
        "",
        "| format | images/s | vs JPEG | median ms/image (one worker) | file MB |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['format']} | {r['images_per_s']:.2f} | {r['vs_jpeg']:.2f}x | {r['median_ms_per_image']:.0f} | {r['file_mb']:.2f} |"
        )
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
