"""Text in photos (OCR): accuracy with the real RapidOCR weights, search recall, and what it costs.

    python bench/ocr_accuracy.py --photos 500 --model models/random-vit-b-32 \
        --out bench/results/ocr-accuracy.md

1. The labelled set: N real photos from ../shared/data/imagenet-sample-images (scaled to 800 px on
   the long side), each with one text rendered on it: a dictionary word (5-10 letters, from
   ImageNet's class names) or a code like "RE16 TGK"; a font of the machine (fc-list: DejaVu,
   Liberation; PIL's default font if none), 12-96 px, rotated up to 15 degrees, in a contrasting
   colour or (1 in 3) a low-contrast one (60 levels from the background's mean), 1 in 4 in perspective. The same N photos without text
   are in the library too, as distractors (the hardest kind: the same picture).
2. `Library.index(ocr=True)` over all 2N photos: embedding and OCR seconds, and the OCR seconds of
   each photo (catalog ocr_scan): what OCR costs on photos with no text against embedding them.
   Text detection alone (`TextReader.detect`) is timed at several `det_side` on the distractors.
3. Per text photo, three queries: the full text, a sub-string of 4+ characters, and the full text
   with one OCR-style error (0/O, 1/l, 5/S, rn/m, ...). Recall@1 and @10 of the photo for the
   fused search (the default), text only, and the two fusions compared (plain RRF and the
   weighted RRF pixquery uses), split by font size. OCR word recall: the text (case, accents and
   spaces ignored) is in what OCR read in the photo.

The semantic side uses `--model`; with random weights (the benchmark model: no real CLIP weights
on this machine) it ranks photos at random, the worst case fusion must survive; with real CLIP it
cannot know "RE16 TGK" either. Speed does not depend on weights (embedding cost is real).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, markdown  # noqa: E402

from pixquery.api import Library  # noqa: E402
from pixquery.catalog.text import fold  # noqa: E402
from pixquery.fusion import TEXT_WEIGHT, fuse  # noqa: E402
from pixquery.ingest.decode import load_image  # noqa: E402
from pixquery.ingest.ocr import OcrConfig, TextReader  # noqa: E402
from pixquery.text_search import search_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "imagenet-sample-images" / "images"
CLASSES = REPO.parent / "shared" / "data" / "imagenet-val-1300" / "classes.csv"
SIZES = (12, 16, 24, 32, 48, 64, 96)
LONG_SIDE = 800
# OCR-style confusions: what a recogniser reads instead (both directions).
CONFUSIONS = [
    ("0", "o"),
    ("1", "l"),
    ("1", "i"),
    ("5", "s"),
    ("8", "b"),
    ("6", "g"),
    ("e", "c"),
    ("a", "o"),
    ("u", "v"),
    ("n", "h"),
    ("i", "l"),
    ("t", "f"),
    ("2", "z"),
]


def dictionary_words(rng: random.Random, n: int) -> list[str]:
    """n English (and Latin) words of 5-10 letters, from ImageNet's class names and synonyms
    (../shared/data; the machine has no /usr/share/dict), in random order (repeats past ~1500)."""
    words = set()
    with open(CLASSES, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for w in re.split(r"[^A-Za-z]+", row["synset_words"] + " " + row["clip_name"]):
                if 5 <= len(w) <= 10:
                    words.add(w.lower())
    pool = sorted(words)
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(n)]


def code(rng: random.Random) -> str:
    """A number-plate-like code: 'RE16 TGK'."""
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return (
        rng.choice(letters)
        + rng.choice(letters)
        + f"{rng.randint(10, 99)} "
        + "".join(rng.choice(letters) for _ in range(3))
    )


def fonts() -> list[str]:
    try:
        out = subprocess.run(["fc-list", ":", "file", "style"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    files = sorted(
        {
            line.split(":")[0]
            for line in out.splitlines()
            if line.split(":")[0].endswith(".ttf") and "Math" not in line and "ExtraLight" not in line
        }
    )
    return files or [""]  # "": PIL's default font


def load_font(file: str, size: int):
    return ImageFont.truetype(file, size) if file else ImageFont.load_default(size)


def luminance(rgb) -> float:
    r, g, b = rgb[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def perspective_coeffs(src, dst):
    """PIL PERSPECTIVE coefficients mapping output points `dst` to input points `src`."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(a, dtype=np.float64), np.array(src, dtype=np.float64).reshape(8)).tolist()


def render(
    base: Image.Image, text: str, font_file: str, size: int, rng: random.Random
) -> tuple[Image.Image, dict] | None:
    """`base` with `text` on it; None when it cannot fit. Contrasting text gets the colour farthest
    from the background under it, and where that background is mixed (bright and dark parts) a
    2-px outline of the opposite colour too, as on signs and captions: readable everywhere.
    Low-contrast text is the background's mean colour 60 levels (of 255) lighter or darker, no outline."""
    font = load_font(font_file, size)
    x0, y0, x1, y1 = ImageDraw.Draw(base).textbbox((0, 0), text, font=font, stroke_width=2)
    pad = size // 2
    shape = (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad)
    glyphs, outline = Image.new("L", shape, 0), Image.new("L", shape, 0)
    ImageDraw.Draw(glyphs).text((pad - x0, pad - y0), text, font=font, fill=255)
    ImageDraw.Draw(outline).text((pad - x0, pad - y0), text, font=font, fill=255, stroke_width=2, stroke_fill=255)
    angle = rng.uniform(-15, 15)
    skewed = rng.random() < 0.25
    w, h = glyphs.rotate(angle, expand=True).size
    k = rng.uniform(0.12, 0.25) * h
    dst = [(0, 0), (w, k), (w, h - k), (0, h)] if rng.random() < 0.5 else [(0, k), (w, 0), (w, h), (0, h - k)]

    def place(mask: Image.Image) -> Image.Image:
        mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        if skewed:  # one side shorter: a sign seen at an angle
            mask = mask.transform(
                (w, h),
                Image.Transform.PERSPECTIVE,
                perspective_coeffs([(0, 0), (w, 0), (w, h), (0, h)], dst),
                Image.Resampling.BICUBIC,
            )
        return mask

    glyphs, outline = place(glyphs), place(outline)
    box = outline.getbbox()
    if box is None:
        return None
    glyphs, outline = glyphs.crop(box), outline.crop(box)
    if outline.width >= base.width - 4 or outline.height >= base.height - 4:
        return None
    px, py = rng.randint(2, base.width - outline.width - 2), rng.randint(2, base.height - outline.height - 2)
    under = np.asarray(base.crop((px, py, px + outline.width, py + outline.height)).convert("L"), dtype=np.float32)
    mean_rgb = np.asarray(base.crop((px, py, px + outline.width, py + outline.height))).reshape(-1, 3).mean(0)
    lum = float(under.mean())
    low = rng.random() < 1 / 3
    out = base.copy()
    if low:
        shift = 60 if lum < 128 else -60
        colour = tuple(int(np.clip(c + shift, 0, 255)) for c in mean_rgb)
        mixed = False
    else:
        light = lum < 128
        colour = rng.choice(
            [(255, 255, 255), (255, 230, 0), (255, 255, 200)] if light else [(0, 0, 0), (20, 20, 120), (140, 0, 0)]
        )
        lo, hi = np.percentile(under, [5, 95])
        mixed = hi - lo > 100
        if mixed:
            out.paste(Image.new("RGB", outline.size, (0, 0, 0) if light else (255, 255, 255)), (px, py), outline)
    out.paste(Image.new("RGB", glyphs.size, colour), (px, py), glyphs)
    truth = {
        "text": text,
        "size": size,
        "font": Path(font_file).stem if font_file else "PIL default",
        "angle": round(angle, 1),
        "perspective": skewed,
        "low_contrast": low,
        "outline": mixed,
        "box": (
            px / base.width,
            py / base.height,
            (px + outline.width) / base.width,
            (py + outline.height) / base.height,
        ),
    }
    return out, truth


def with_error(text: str, rng: random.Random) -> str:
    """`text` with one OCR-style misreading in a word of 4+ characters."""
    low = text.lower()
    spots = [(i, a, b) for i, ch in enumerate(low) for a, b in CONFUSIONS + [(b, a) for a, b in CONFUSIONS] if ch == a]
    spots = [s for s in spots if len(max(text.split(), key=len)) >= 4]
    if spots:
        i, _, b = rng.choice(spots)
    else:
        i = rng.choice([n for n, c in enumerate(text) if c != " "])
        b = "x" if low[i] != "x" else "k"
    b = b.upper() if text[i].isupper() else b
    return text[:i] + b + text[i + 1 :]


def substring(text: str, rng: random.Random) -> str:
    """A sub-string of 4+ characters: a code's first part ('RE16'), else 4-5 characters of the word."""
    if " " in text:
        return text.split()[0]
    n = rng.choice([4, 5])
    start = rng.randint(0, len(text) - n)
    return text[start : start + n]


def build_set(n: int, folder: Path, seed: int) -> list[dict]:
    rng = random.Random(seed)
    files = sorted(PHOTOS.iterdir())
    chosen = rng.sample(files, n)
    words = dictionary_words(rng, n)
    font_files = fonts()
    (folder / "text").mkdir(parents=True)
    (folder / "plain").mkdir()
    truths = []
    for i, src in enumerate(chosen):
        img = Image.open(src).convert("RGB")
        f = LONG_SIDE / max(img.size)
        base = img.resize((round(img.width * f), round(img.height * f)), Image.Resampling.LANCZOS)
        base.save(folder / "plain" / f"{src.stem}.jpg", quality=90)
        size = SIZES[i % len(SIZES)]
        for attempt in range(20):
            text = code(rng) if rng.random() < 0.3 else words[(i + attempt * 7) % len(words)]
            done = render(base, text, rng.choice(font_files), size, rng)
            if done:
                break
        else:
            raise SystemExit(f"could not fit text of {size} px on {src}")
        out, truth = done
        path = folder / "text" / f"{src.stem}.jpg"
        out.save(path, quality=90)
        truth["path"] = str(path)
        truths.append(truth)
    return truths


def time_costs(lib: Library, paths: list[Path], engine: str, sides=(480, 640, 960)) -> dict:
    """Median seconds per photo (photos without text), measured interleaved photo by photo so that
    the load of a shared machine falls on all alike: embedding one photo (`Library.embed_image`:
    decode, crop, encode) and text detection alone at each det_side (decode included)."""
    readers = {side: TextReader(OcrConfig(det_side=side, engine=engine)) for side in sides}
    lib.embed_image(paths[0])
    for r in readers.values():
        r.detect(load_image(paths[0]))
    times = defaultdict(list)
    for p in paths:
        t = time.perf_counter()
        lib.embed_image(p)
        times["embed"].append(time.perf_counter() - t)
        for side, r in readers.items():
            t = time.perf_counter()
            r.detect(load_image(p, draft_size=OcrConfig().rec_side // 2))
            times[side].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def rank_of(paths: list[str], target: str) -> int | None:
    return paths.index(target) + 1 if target in paths else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=500, help="photos with text (as many again without)")
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument(
        "--det-side", type=int, default=OcrConfig().det_side, help="OCR detection size (default: pixquery's)"
    )
    ap.add_argument("--engine", default=OcrConfig().engine, help="OCR engine (default: pixquery's)")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    ap.add_argument("--keep", type=Path, default=None, help="build the set and library here (kept)")
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        raise SystemExit(f"needs {PHOTOS} (the shared data beside the checkout)")
    work = args.keep or Path(tempfile.mkdtemp(prefix="pixquery-ocr-bench-"))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    truths = build_set(args.photos, work / "photos", args.seed)
    print(
        f"set: {len(truths)} photos with text + {len(truths)} without, in {time.perf_counter() - t0:.0f}s", flush=True
    )

    lib = Library.open(work / "lib", model=args.model)
    config = OcrConfig(det_side=args.det_side, engine=args.engine)
    report = lib.index([work / "photos"], ocr=config)
    photos = report.indexed
    print(f"indexed {photos} photos: embedding {report.embed_seconds:.1f}s, OCR {report.ocr_seconds:.1f}s", flush=True)
    scans = {p: (lines, s) for p, lines, s in lib.catalog.ocr_scans()}
    plain = [s for p, (_, s) in scans.items() if "/plain/" in p]
    texty = [s for p, (_, s) in scans.items() if "/text/" in p]
    embed_per_photo = report.embed_seconds / max(photos, 1)
    costs = time_costs(lib, sorted((work / "photos" / "plain").iterdir())[:40], args.engine)

    # OCR word recall: the text is in what was read (case, accents and spaces ignored)
    read = defaultdict(str)
    for image_id, lines in lib.catalog.text_of_photos(
        [lib.catalog.image_by_path(t["path"]).id for t in truths]
    ).items():
        read[lib.catalog.image(image_id).path] = "".join(fold(ln.text).replace(" ", "") for ln in lines)
    for t in truths:
        t["read"] = fold(t["text"]).replace(" ", "") in read[t["path"]]

    rng = random.Random(args.seed + 1)
    kinds = ("full", "substring", "one error")
    rows = []  # (size, kind, fused rank, text-only rank, plain RRF rank, weighted RRF rank)
    for t in truths:
        for kind in kinds:
            q = (
                t["text"]
                if kind == "full"
                else substring(t["text"], rng)
                if kind == "substring"
                else with_error(t["text"], rng)
            )
            fused = [r.path for r in lib.search(q, k=10)]
            text_only = [r.path for r in lib.search(q, k=10, text_only=True)]
            semantic = lib.search(q, k=50, semantic_only=True)
            hits = search_text(lib.catalog, q, limit=50)
            paths = {h.image_id: p for h, p in zip(hits, [lib.catalog.image(h.image_id).path for h in hits])}
            lists = {
                "semantic": [(r.path, 1.0) for r in semantic],
                "text": [(paths[h.image_id], h.score) for h in hits],
            }
            plain_rrf = [f.key for f in fuse(lists)][:10]
            weighted = [f.key for f in fuse(lists, weights={"text": TEXT_WEIGHT})][:10]
            rows.append((t["size"], kind, *(rank_of(x, t["path"]) for x in (fused, text_only, plain_rrf, weighted))))
    seconds = time.perf_counter() - t0
    load1 = os.getloadavg()

    def recall(sel, col, at):
        sel = list(sel)
        return sum(1 for r in sel if r[col] is not None and r[col] <= at) / max(len(sel), 1)

    lines = [
        "# OCR: accuracy with real weights, search recall, cost",
        "",
        f"Command: `python bench/ocr_accuracy.py --photos {args.photos} --model {args.model} --det-side {args.det_side}`"
        + (f" (seed {args.seed})" if args.seed != 15 else ""),
        "",
        f"{len(truths)} real photos (imagenet-sample-images, scaled to {LONG_SIDE} px long side) with one text each, "
        f"and the same {len(truths)} photos without text as distractors: {photos} photos in the library. "
        f"Engine: RapidOCR, ONNX weights from the wheel, "
        f"settings {config.resolved().to_json()}. Semantic side: `{args.model}`"
        + (" (random weights: its ranking is noise, the worst case for fusion)" if "random" in args.model else "")
        + ".",
        f"Whole run {seconds:.0f} s; load average {load0[0]:.2f} before, {load1[0]:.2f} after.",
        "",
        "## Search recall by font size",
        "",
        "Recall@1 / recall@10 of the photo with the text, default search (semantic + text fused). "
        "OCR read: the share of photos where OCR read the text exactly (case, accents, spaces ignored).",
        "",
        "| size px | photos | OCR read | full @1 | full @10 | sub-string @1 | sub-string @10 | one error @1 | one error @10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    buckets = [(s, s) for s in SIZES] + [(24, 96), (12, 96)]
    for lo, hi in buckets:
        sel = [r for r in rows if lo <= r[0] <= hi]
        ts = [t for t in truths if lo <= t["size"] <= hi]
        name = f"{lo}" if lo == hi else f"**{lo}-{hi}**"
        cells = [name, str(len(ts)), f"{sum(t['read'] for t in ts) / max(len(ts), 1):.2f}"]
        for kind in kinds:
            k = [r for r in sel if r[1] == kind]
            cells += [f"{recall(k, 2, 1):.2f}", f"{recall(k, 2, 10):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Fusion compared (all sizes; recall@1 / @10)",
        "",
        "| query | text only | plain RRF (weights 1, 1) | weighted RRF (text x2, pixquery) |",
        "|---|---|---|---|",
    ]
    for kind in kinds:
        k = [r for r in rows if r[1] == kind]
        lines.append(
            f"| {kind} | {recall(k, 3, 1):.2f} / {recall(k, 3, 10):.2f} | {recall(k, 4, 1):.2f} / "
            f"{recall(k, 4, 10):.2f} | {recall(k, 5, 1):.2f} / {recall(k, 5, 10):.2f} |"
        )
    lines += ["", "## OCR read, by condition", "", "| condition | photos | OCR read |", "|---|---|---|"]
    for name, pred in (
        ("contrasting colour", lambda t: not t["low_contrast"]),
        ("low contrast", lambda t: t["low_contrast"]),
        ("perspective", lambda t: t["perspective"]),
        ("|angle| > 8 degrees", lambda t: abs(t["angle"]) > 8),
        ("code (e.g. RE16 TGK)", lambda t: " " in t["text"]),
        ("dictionary word", lambda t: " " not in t["text"]),
    ):
        ts = [t for t in truths if pred(t)]
        lines.append(f"| {name} | {len(ts)} | {sum(t['read'] for t in ts) / max(len(ts), 1):.2f} |")
    ratio = costs[args.det_side] / costs["embed"] if args.det_side in costs else float("nan")
    lines += [
        "",
        "## Cost",
        "",
        "Interleaved photo by photo on 40 photos without text (medians), so the shared machine's load falls on all alike:",
        "",
        "| seconds per photo | |",
        "|---|---|",
        f"| embedding one photo (`Library.embed_image`: decode, crop, encode) | {costs['embed']:.3f} |",
    ]
    for side in sorted(k for k in costs if k != "embed"):
        lines.append(
            f"| text detection alone, det_side {side} (decode included) | {costs[side]:.3f} ({costs[side] / costs['embed']:.2f}x) |"
        )
    lines += [
        "",
        "In the index run over all the photos above:",
        "",
        "| seconds per photo | |",
        "|---|---|",
        f"| embedding stage with OCR in the decode workers (`Library.index`, {photos} photos, wall) | {embed_per_photo:.3f} |",
        f"| OCR in a decode worker, photos without text (median; detection + recognition of any false boxes) | {np.median(plain):.3f} |",
        f"| OCR in a decode worker, photos with text (median) | {np.median(texty):.3f} |",
        "",
        f"At det_side {args.det_side}, text detection costs {ratio:.2f}x embedding a photo one at a time "
        f"(interleaved). In the index run the decode workers read the text beside the encoder: "
        f"{report.embed_seconds:.1f} s for the embedding stage, the workers' OCR time summed {report.ocr_seconds:.1f} s "
        f"(text photos included). bench/ocr_cost.py measures indexing speed with and without OCR side by side.",
        "",
    ]
    lines += [
        "## Machine",
        "",
        markdown(
            describe(
                ("numpy", "pillow", "onnxruntime", "rapidocr", "rapidocr-onnxruntime", "rapidfuzz", "opencv-python")
            )
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)
    lib.close()


if __name__ == "__main__":
    main()
