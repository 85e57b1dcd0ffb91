#!/usr/bin/env python
"""Random-weight models placed where each peer's own loader looks, so the peers run offline, unmodified.

    # in pixquery's venv (torch + open_clip): rclip's ONNX files
    python bench/peers/make_peer_models.py rclip --out /work/peers/rclip-data
    python bench/peers/make_peer_models.py rclip --out /work/peers/rclip-data-224 --arch ViT-B-32
    # in clip-retrieval's venv (torch + OpenAI's clip package): an OpenAI-format state dict
    python bench/peers/make_peer_models.py clip-retrieval --out /work/peers/clip-retrieval-data

rclip 3.3.0 reads `$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/{visual,textual}.onnx` (ONNX
Runtime, input and output named `input` / `output`) and `$RCLIP_DATADIR/tokenizer/
bpe_simple_vocab_16e6.txt.gz`; when all are there it downloads nothing. Its model is ViT-B/32 at
256 px (65 tokens instead of 50: about 1.3x the compute of ViT-B/32 at 224). `--arch ViT-B-32`
writes the 224 px architecture under the same name, for a same-architecture comparison (rclip
then has to be told its input size, see bench/peers/README.md).

clip-retrieval 2.45.0 loads `--clip_model PATH` with OpenAI's `clip.load(PATH)`: a TorchScript
archive or a state dict in OpenAI's layout, from which it builds the model (`clip.model.build_model`).
We save the state dict of a randomly initialised OpenAI ViT-B/32 (seeded).

Speed does not depend on weight values; rankings from random weights mean nothing.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from pathlib import Path

RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"


def make_rclip(out: Path, arch: str, seed: int) -> None:
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=None).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    folder = out / RCLIP_SUBDIR
    folder.mkdir(parents=True, exist_ok=True)

    class Visual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return self.m.encode_image(x)

    class Textual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, t):
            return self.m.encode_text(t)

    with torch.enable_grad():  # open_clip's attention exports only with autograd on (MEASURED.md)
        for name, module, example in (
            ("visual.onnx", Visual(), torch.randn(2, 3, size, size)),
            ("textual.onnx", Textual(), torch.randint(0, 1000, (2, 77), dtype=torch.int64)),
        ):
            tmp = folder / (name + ".tmp")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
            tmp.replace(folder / name)
            print(f"{folder / name}  ({arch}, {size} px)")
    vocab = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    shutil.copy(vocab, out / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(out / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz") as f:
        f.read(10)  # a valid gzip


def make_clip_retrieval(out: Path, seed: int) -> None:
    import torch
    from clip.model import CLIP

    torch.manual_seed(seed)
    # OpenAI ViT-B/32: embed 512, image 224, 12 layers of width 768, patch 32; text 77 x 49408, 12 x 512, 8 heads
    model = CLIP(512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ViT-B-32-random.pt"
    torch.save(model.state_dict(), path)
    print(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("peer", choices=["rclip", "clip-retrieval"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--arch", default="ViT-B-32-256", help="rclip: open_clip architecture (default: rclip's own)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.peer == "rclip":
        make_rclip(args.out, args.arch, args.seed)
    else:
        make_clip_retrieval(args.out, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
