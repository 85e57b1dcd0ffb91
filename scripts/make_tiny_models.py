#!/usr/bin/env python
"""Write small random-weight CLIP models in the immich ONNX layout, for tests, CI and benchmarks.

The tiny models are the real open_clip architectures (VisionTransformer for ViT-B/32, ModifiedResNet
for RN50) with tiny widths and depths, but with the real vocabulary (49408), context (77) and image
size (224), so tokenisation, preprocessing and ONNX loading are exercised exactly as with real
weights. Random weights say nothing about ranking quality.

No torch: the ONNX graphs are written with numpy and onnx (pixquery.encoders.random_onnx). The same
weights are saved under open_clip's names (open_clip_model.safetensors), so the torch tests load them
into open_clip's own model and check that the graphs give the same embeddings.

    python scripts/make_tiny_models.py            # models/tiny-vit-b-32, models/tiny-rn50
    python scripts/make_tiny_models.py --full     # + models/random-vit-b-32 (full size, ~600 MB)
    python scripts/make_tiny_models.py --full --rn50

Seeded and deterministic; existing complete folders are kept unless --force.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "models"
_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}

TINY = {
    "vit": (
        "tiny-vit-b-32",
        {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 224, "patch_size": 32, "width": 64, "head_width": 32, "layers": 2},
            "text_cfg": _TEXT,
        },
    ),
    # A list of layers makes open_clip build a ModifiedResNet (attention-pool head) as for RN50.
    "rn50": (
        "tiny-rn50",
        {"embed_dim": 48, "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 8}, "text_cfg": _TEXT},
    ),
}
# open_clip's own configs for these names (model_configs/ViT-B-32.json, RN50.json).
_FULL_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
FULL = {
    "vit": (
        "random-vit-b-32",
        {
            "embed_dim": 512,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": _FULL_TEXT,
        },
    ),
    "rn50": (
        "random-rn50",
        {
            "embed_dim": 1024,
            "vision_cfg": {"image_size": 224, "layers": [3, 4, 6, 3], "width": 64, "patch_size": None},
            "text_cfg": _FULL_TEXT,
        },
    ),
}


def _writer():
    sys.path.insert(0, str(ROOT / "src"))  # runs from a fresh clone without `pip install -e`
    from pixquery.encoders.random_onnx import write_random_model

    return write_random_model


def make_tiny_model(kind: str = "vit", out: Path = DEFAULT_OUT, force: bool = False) -> Path:
    name, cfg = TINY[kind]
    return _writer()(cfg, Path(out) / name, seed=0, save_weights=True, force=force)


def make_full_random_model(kind: str = "vit", out: Path = DEFAULT_OUT, force: bool = False) -> Path:
    name, cfg = FULL[kind]
    return _writer()(cfg, Path(out) / name, seed=0, save_weights=False, force=force)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the models (default: models/)")
    ap.add_argument("--force", action="store_true", help="rewrite models that already exist")
    ap.add_argument("--full", action="store_true", help="also write full-size random-weight ViT-B-32")
    ap.add_argument("--rn50", action="store_true", help="with --full: also a full-size random RN50")
    args = ap.parse_args(argv)
    jobs = [(make_tiny_model, k) for k in TINY]
    if args.full:
        jobs += [(make_full_random_model, "vit")] + ([(make_full_random_model, "rn50")] if args.rn50 else [])
    for fn, kind in jobs:
        t0 = time.perf_counter()
        path = fn(kind, args.out, args.force)
        print(f"{path}  ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
