"""What angular distance a model puts between a photo and its copies, and between different photos:
the basis for the near-duplicate threshold of `pixquery duplicates` (docs/duplicates.md).

    python bench/duplicate_distances.py --model models/tiny-vit-b-32 \
        --photos ../shared/data/imagenet-sample-images/images --n 60

Each of the first n photos is re-encoded four ways (half size + JPEG q70, JPEG q40, 3/4 size + JPEG
q85, lossless PNG) and embedded through pixquery's own decode and crop stage; the distance of each
copy to its original is set beside the distances between the n different originals. A threshold
separates copies from different photos when it lies between the largest copy distance and the
smallest distance between different photos. Run it with real CLIP weights (--model ViT-B-32 where
the weights can be downloaded) to check DEFAULT_THRESHOLD; here only the random-weight test model ran.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pixquery.encoders.registry import load_encoder  # noqa: E402
from pixquery.ingest.pipeline import embed_picture  # noqa: E402

VARIANTS = {
    "half size, JPEG q70": (0.5, 70),
    "JPEG q40": (1.0, 40),
    "3/4 size, JPEG q85": (0.75, 85),
    "PNG": (1.0, None),
}


def variants(path: Path) -> dict[str, bytes]:
    im = Image.open(path).convert("RGB")
    out = {}
    for name, (scale, quality) in VARIANTS.items():
        v = im if scale == 1 else im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        buf = io.BytesIO()
        v.save(buf, "PNG") if quality is None else v.save(buf, "JPEG", quality=quality)
        out[name] = buf.getvalue()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--n", type=int, default=60)
    args = ap.parse_args()
    enc = load_encoder(args.model)
    files = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
    originals, copies = [], {name: [] for name in VARIANTS}
    for f in files:
        v0 = embed_picture(f.read_bytes(), enc, name=str(f))
        originals.append(v0)
        for name, data in variants(f).items():
            copies[name].append(float(np.arccos(np.clip(v0 @ embed_picture(data, enc), -1, 1)) / np.pi))
    x = np.stack(originals)
    d = np.arccos(np.clip((x @ x.T)[np.triu_indices(len(x), 1)], -1, 1)) / np.pi
    print(
        f"model {args.model}{' (random weights)' if getattr(enc, 'random_weights', False) else ''}, {len(files)} photos of {args.photos}"
    )
    print("| pair | min | median | max |\n|---|---:|---:|---:|")
    for name, ds in copies.items():
        print(f"| photo vs its copy: {name} | {min(ds):.4f} | {np.median(ds):.4f} | {max(ds):.4f} |")
    print(f"| different photos ({len(d)} pairs) | {d.min():.4f} | {np.median(d):.4f} | {d.max():.4f} |")
    print(f"| different photos, 1st percentile | {np.percentile(d, 1):.4f} | | |")


if __name__ == "__main__":
    main()
