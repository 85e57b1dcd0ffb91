"""End-to-end indexing speed against the encoder's own speed, side by side in one run.

    flock /tmp/pixquery-bench.lock python bench/ingest.py --model models/random-vit-b-32 --large 200 --reps 3

1. ceiling: the encoder alone on already-preprocessed tensors (same batch size), images/s;
2. end to end: `Library.index` on the same photos into a fresh library (scan, decode in workers,
   encode, catalog writes, index build), images/s over the whole call;
and prints end-to-end / ceiling. The foundation issue's target is >= 0.85 on the real photos; the
speed issue's is >= 0.85 on 12 MP photos too (`--large N`: N of the photos upscaled to 12 MP, made
in a temporary folder). Measurements are interleaved (ceiling, end to end, next set, ..., then the
next repetition), so background load falls on every configuration alike; medians are reported,
with the machine's load average before and after.

`--variant NAME:key=value,...` compares pipeline settings in the same run (each gets its own end to
end measurement per repetition): decoder=process|thread, nice=N, spin=0|1 (ONNX Runtime threads
busy-wait), workers=N, threads=N (ONNX Runtime intra-op threads).
Full-size random weights (scripts/make_tiny_models.py --full): speed does not depend on weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
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
from pixquery.ingest.executors import local as pipeline  # noqa: E402  (the local executor's defaults)
from pixquery.ingest.scan import IMAGE_EXTENSIONS  # noqa: E402

ENV_KEYS = {"spin": "PIXQUERY_ORT_SPIN", "threads": "PIXQUERY_THREADS"}


def photos_in(folder: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files[:limit] if limit else files


def load_avg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def preprocessed(encoder, files: list[Path]) -> np.ndarray:
    cfg = encoder.preprocess_cfg
    return normalize(np.stack([decode_file(f, cfg).pixels for f in files]), cfg)


def encoder_ceiling(encoder, tensors: np.ndarray, batch_size: int) -> float:
    encoder.encode_images(tensors[:batch_size])  # warm-up (allocations)
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        encoder.encode_images(tensors[i : i + batch_size])
    return len(tensors) / (time.perf_counter() - t0)


class Variant:
    def __init__(self, spec: str):
        self.name, _, rest = spec.partition(":")
        self.settings = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
        unknown = set(self.settings) - {"decoder", "nice", "spin", "workers", "threads"}
        if unknown:
            raise SystemExit(f"unknown variant settings {sorted(unknown)} in {spec!r}")

    def __enter__(self):
        self.saved = (
            pipeline.DEFAULT_DECODER,
            pipeline.DEFAULT_NICE,
            {k: os.environ.get(v) for k, v in ENV_KEYS.items()},
        )
        pipeline.DEFAULT_DECODER = self.settings.get("decoder", pipeline.DEFAULT_DECODER)
        pipeline.DEFAULT_NICE = int(self.settings.get("nice", pipeline.DEFAULT_NICE))
        for key, env in ENV_KEYS.items():
            if key in self.settings:
                os.environ[env] = self.settings[key]
        return self

    def __exit__(self, *exc):
        pipeline.DEFAULT_DECODER, pipeline.DEFAULT_NICE, env = self.saved
        for key, value in env.items():
            if value is None:
                os.environ.pop(ENV_KEYS[key], None)
            else:
                os.environ[ENV_KEYS[key]] = value

    @property
    def workers(self) -> int | None:
        return int(self.settings["workers"]) if "workers" in self.settings else None


def end_to_end(
    model: str, files: list[Path], batch_size: int, workers: int | None, precision: str
) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for f in files:  # links, so the library sees exactly this set
            (folder / f.name).symlink_to(f.resolve())
        lib = Library.open(Path(tmp) / "lib", model=model, precision=precision)
        size = lib.encoder.preprocess_cfg.size
        lib.encoder.encode_images(np.zeros((1, 3, size, size), "float32"))  # session created outside the clock
        t0 = time.perf_counter()
        report = lib.index([folder], batch_size=batch_size, workers=workers)
        seconds = time.perf_counter() - t0
        lib.close()
    assert report.indexed == len(files), report.failed[:5]
    return report.indexed / seconds, report.to_dict()


def make_large(files: list[Path], out: Path, megapixels: float = 12.0) -> list[Path]:
    """The photos upscaled to ~12 MP (4000x3000 for 4:3), saved as JPEG quality 90 like a phone."""
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for f in files:
        p = out / (f.stem + "_12mp.jpg")
        if not p.exists():
            img = Image.open(f).convert("RGB")
            scale = (megapixels * 1e6 / (img.width * img.height)) ** 0.5
            big = img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.BICUBIC)
            big.save(p, quality=90)
        made.append(p)
    return made


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument(
        "--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/imagenet-sample-images/images"
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--large", type=int, default=0, help="also measure N photos upscaled to 12 MP")
    ap.add_argument(
        "--large-dir", type=Path, default=None, help="keep the 12 MP copies here (default: a temporary folder)"
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions; medians are reported")
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value,... (see the module doc)")
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
        tmp = args.large_dir or Path(tempfile.mkdtemp(prefix="pixquery-12mp-"))
        sets.append(("12 MP photos", make_large(files[: args.large], tmp)))
    variants = [Variant(v) for v in args.variant] or [Variant("default:")]
    tensors = {label: preprocessed(encoder, group) for label, group in sets}
    load_before = load_avg()
    runs: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for label, group in sets:
            c = encoder_ceiling(encoder, tensors[label], args.batch_size)
            runs.setdefault((label, "ceiling"), []).append(c)
            line = f"rep {rep + 1} {label:>12}: encoder alone {c:6.2f} img/s"
            for v in variants:
                with v:
                    e2e, _ = end_to_end(args.model, group, args.batch_size, v.workers or args.workers, args.precision)
                runs.setdefault((label, v.name), []).append(e2e)
                line += f" | {v.name} {e2e:6.2f} img/s ({e2e / c:.3f})"
            print(line + f"  [load {load_avg()}]", flush=True)
    load_after = load_avg()
    if tmp and not args.large_dir:
        shutil.rmtree(tmp)

    rows = []
    for label, group in sets:
        ceiling = statistics.median(runs[(label, "ceiling")])
        for v in variants:
            e2e = statistics.median(runs[(label, v.name)])
            ratios = [e / c for e, c in zip(runs[(label, v.name)], runs[(label, "ceiling")])]
            rows.append(
                {
                    "set": label,
                    "images": len(group),
                    "variant": v.name,
                    "settings": v.settings,
                    "encoder_only": ceiling,
                    "end_to_end": e2e,
                    "ratio": e2e / ceiling,
                    "ratio_per_rep": ratios,
                    "ceiling_runs": runs[(label, "ceiling")],
                    "end_to_end_runs": runs[(label, v.name)],
                }
            )
    machine = describe()
    cmd = (
        f"python bench/ingest.py --model {args.model} --batch-size {args.batch_size} --reps {args.reps}"
        + (f" --limit {args.limit}" if args.limit else "")
        + (f" --large {args.large}" if args.large else "")
        + (f" --precision {args.precision}" if args.precision != "fp32" else "")
        + "".join(f" --variant {v}" for v in args.variant)
    )
    lines = [
        "# Ingest: end to end vs encoder alone",
        "",
        f"Command: `flock /tmp/pixquery-bench.lock {cmd}`",
        "",
        markdown(machine),
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.",
        "",
        f"Medians of {args.reps} interleaved repetitions; the ratio is median end to end / median encoder alone.",
        "",
        "| set | images | variant | encoder alone (img/s) | end to end (img/s) | ratio | per-repetition ratios |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['set']} | {r['images']} | {r['variant']} | {r['encoder_only']:.2f} | {r['end_to_end']:.2f} | {r['ratio']:.3f} | "
        + ", ".join(f"{x:.3f}" for x in r["ratio_per_rep"])
        + " |"
        for r in rows
    ]
    for line in lines[-len(rows) - 2 :]:
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "machine": machine,
                "model": args.model,
                "command": cmd,
                "load_before": load_before,
                "load_after": load_after,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
