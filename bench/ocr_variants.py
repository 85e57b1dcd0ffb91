"""OCR settings compared on one labelled set: what each variant reads, and what its detection costs.

    python bench/ocr_variants.py --photos 105 --keep /tmp/ocr-set \
        --variant base:det_side=480 --variant clahe:det_side=480,contrast=clahe

The set is bench/ocr_accuracy.py's (same seed, same photos and texts; built once into --keep and
reused). For each variant (`name:field=value,...` of ingest/ocr.py's OcrConfig): the share of
photos whose text OCR read exactly (case, accents, spaces ignored; what bounds search recall), for
24-96 px text, split into contrasting and low-contrast, and 12-16 px; for low-contrast text
whether detection found it (a box covering half of it: detection's share of the misses) and
whether recognition reads it from its true box (what a perfect detector would give); then, on the photos without
text, the median seconds of detection alone (decode included), the share of them where detection
found a (false) box (each costs a recognition), and the median seconds of the whole read. No
library, no embedding: use bench/ocr_accuracy.py for search recall of the chosen settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ocr_accuracy import PHOTOS, build_set  # noqa: E402

from pixquery.catalog.text import fold  # noqa: E402
from pixquery.ingest.decode import load_image  # noqa: E402
from pixquery.ingest.ocr import OcrConfig, TextReader  # noqa: E402


def covers(quad: np.ndarray, box) -> bool:
    """A detected box (relative quadrilateral) covers half or more of the text's true box."""
    x0, y0 = quad.min(0)
    x1, y1 = quad.max(0)
    ix = max(0.0, min(x1, box[2]) - max(x0, box[0]))
    iy = max(0.0, min(y1, box[3]) - max(y0, box[1]))
    return ix * iy >= 0.5 * (box[2] - box[0]) * (box[3] - box[1])


def parse_variant(spec: str) -> tuple[str, OcrConfig]:
    name, _, fields = spec.partition(":")
    types = {f.name: f.type for f in dataclasses.fields(OcrConfig)}
    kw = {}
    for pair in filter(None, fields.split(",")):
        key, _, value = pair.partition("=")
        if key not in types:
            raise SystemExit(f"--variant {spec}: OcrConfig has no field {key!r}")
        kw[key] = int(value) if types[key] == "int" else float(value) if types[key] == "float" else value
    return name, OcrConfig(**kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=105)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--keep", type=Path, required=True, help="the labelled set is built here once, then reused")
    ap.add_argument("--variant", action="append", required=True, help="name:field=value,... (OcrConfig fields)")
    ap.add_argument("--plain", type=int, default=30, help="photos without text timed per variant")
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        raise SystemExit(f"needs {PHOTOS} (the shared data beside the checkout)")
    truth_file = args.keep / f"truths-{args.photos}-{args.seed}.json"
    if not truth_file.exists():
        truths = build_set(args.photos, args.keep / "photos", args.seed)
        truth_file.write_text(json.dumps(truths, default=lambda o: o.item()))  # numpy scalars
    truths = json.loads(truth_file.read_text())
    plain = sorted((args.keep / "photos" / "plain").iterdir())[: args.plain]
    print(
        "| variant | settings | read 24-96 | contrasting | low contrast | read 12-16 | low contrast: box found | "
        "low contrast: read from its true box | "
        "detect s/photo (no text) | "
        "no-text photos with a box | read s/photo (no text) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.variant:
        name, config = parse_variant(spec)
        reader = TextReader(config, threads=1)
        reader.read(load_image(plain[0]))  # sessions warm
        ok, found, ceiling = {}, {}, {}
        for t in truths:
            image = load_image(t["path"], draft_size=config.rec_side // 2)
            quads = reader.detect(image)
            found[t["path"]] = any(covers(q, t["box"]) for q in quads)
            lines = reader.recognise(image, quads) if len(quads) else []
            want = fold(t["text"]).replace(" ", "")
            ok[t["path"]] = want in "".join(fold(b.text).replace(" ", "") for b in lines)
            if t["low_contrast"] and t["size"] >= 24:  # recognition alone, given the text's true box
                x0, y0, x1, y1 = t["box"]
                true_box = np.array([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]]], np.float32)
                read = reader.recognise(image, true_box)
                ceiling[t["path"]] = want in "".join(fold(b.text).replace(" ", "") for b in read)
        det, full, boxed = [], [], 0
        for p in plain:
            t0 = time.perf_counter()
            image = load_image(p, draft_size=config.rec_side // 2)
            quads = reader.detect(image)
            det.append(time.perf_counter() - t0)
            boxed += bool(len(quads))
            t0 = time.perf_counter()
            reader.read(load_image(p, draft_size=config.rec_side // 2))
            full.append(time.perf_counter() - t0)

        def rate(pred, of=ok) -> str:
            sel = [of[t["path"]] for t in truths if pred(t)]
            return f"{sum(sel) / max(len(sel), 1):.2f} ({len(sel)})"

        settings = {k: v for k, v in dataclasses.asdict(config).items() if v != getattr(OcrConfig(), k)}
        print(
            f"| {name} | {json.dumps(settings)} | {rate(lambda t: t['size'] >= 24)} | "
            f"{rate(lambda t: t['size'] >= 24 and not t['low_contrast'])} | "
            f"{rate(lambda t: t['size'] >= 24 and t['low_contrast'])} | {rate(lambda t: t['size'] < 24)} | "
            f"{rate(lambda t: t['size'] >= 24 and t['low_contrast'], found)} | "
            f"{rate(lambda t: t['size'] >= 24 and t['low_contrast'], ceiling)} | "
            f"{np.median(det):.3f} | {boxed / len(plain):.2f} | {np.median(full):.3f} |",
            flush=True,
        )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
