"""End-to-end indexing speed against the encoder's own speed, side by side in one run.

    python bench/ingest.py --model models/random-vit-b-32 --photos ../shared/data/imagenet-sample-images/images

1. ceiling: the encoder alone on already-preprocessed tensors (same batch size), images/s;
2. end to end: `Library.index` on the same photos into a fresh library (scan, decode in workers,
   encode, catalog writes, index build), images/s over the whole run;
and prints end-to-end / ceiling. The foundation issue's target is >= 0.85. `--large N` adds the
same measurement on N of the photos upscaled to 12 MP (phone-size JPEGs).
Full-size random weights (scripts/make_tiny_models.py --full): speed does not depend on weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, markdown  # noqa: E402

from pixquery.api import Library  # noqa: E402
from pixquery.encoders.registry import load_encoder  # noqa: E402
from pixquery.ingest.decode import decode_file, normalize  # noqa: E402
from pixquery.ingest.scan import IMAGE_EXTENSIONS  # noqa: E402


def photos_in(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files[:limit] if limit else files


def encoder_ceiling(encoder, files: list[Path], batch_size: int) -> float:
    cfg = encoder.preprocess_cfg
    tensors = normalize(np.stack([decode_file(f, cfg).pixels for f in files]), cfg)
    encoder.encode_images(tensors[:batch_size])  # warm-up (session start, allocations)
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        encoder.encode_images(tensors[i : i + batch_size])
    return len(tensors) / (time.perf_counter() - t0)


def end_to_end(model: str, files: list[Path], batch_size: int, workers: int | None, precision: str) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for f in files:  # links, so the library sees exactly this set
            (folder / f.name).symlink_to(f.resolve())
        lib = Library.open(Path(tmp) / "lib", model=model, precision=precision)
        lib.encoder.encode_images(np.zeros((1, 3, lib.encoder.preprocess_cfg.size, lib.encoder.preprocess_cfg.size), "float32"))
        t0 = time.perf_counter()
        report = lib.index([folder], batch_size=batch_size, workers=workers)
        seconds = time.perf_counter() - t0
        lib.close()
    assert report.indexed == len(files), report.failed[:5]
    return report.indexed / seconds, report.to_dict()


def make_large(files: list[Path], out: Path, megapixels: float = 12.0) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for f in files:
        img = Image.open(f).convert("RGB")
        scale = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
        big = img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.BICUBIC)
        p = out / (f.stem + "_12mp.jpg")
        big.save(p, quality=90)
        made.append(p)
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/imagenet-sample-images/images")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--large", type=int, default=0, help="also measure N photos upscaled to 12 MP")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ingest")
    args = ap.parse_args()

    if not args.photos.exists():
        print(f"no photos at {args.photos}: pass --photos FOLDER", file=sys.stderr)
        return 2
    files = photos_in(args.photos, args.limit)
    encoder = load_encoder(args.model, precision=args.precision)
    sets = [("photos", files)]
    tmp = None
    if args.large:
        tmp = Path(tempfile.mkdtemp(prefix="pixquery-12mp-"))
        sets.append(("12 MP photos", make_large(files[: args.large], tmp)))
    rows = []
    for label, group in sets:
        ceiling = encoder_ceiling(encoder, group, args.batch_size)
        e2e, report = end_to_end(args.model, group, args.batch_size, args.workers, args.precision)
        rows.append({"set": label, "images": len(group), "encoder_only": ceiling, "end_to_end": e2e, "ratio": e2e / ceiling})
        print(f"{label:>14}: {len(group)} images  encoder alone {ceiling:6.2f} img/s  end to end {e2e:6.2f} img/s  ratio {e2e / ceiling:.3f}", flush=True)
    if tmp:
        shutil.rmtree(tmp)

    machine = describe()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Ingest: end to end vs encoder alone",
        "",
        f"Command: `python bench/ingest.py --model {args.model} --batch-size {args.batch_size}"
        + (f" --limit {args.limit}" if args.limit else "") + (f" --large {args.large}" if args.large else "")
        + (f" --precision {args.precision}" if args.precision != "fp32" else "") + "`",
        "",
        markdown(machine),
        "",
        "| set | images | encoder alone (img/s) | end to end (img/s) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {r['set']} | {r['images']} | {r['encoder_only']:.2f} | {r['end_to_end']:.2f} | {r['ratio']:.3f} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"machine": machine, "model": args.model, "rows": rows}, indent=2))
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
