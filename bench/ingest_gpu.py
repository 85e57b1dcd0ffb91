"""Indexing speed on a GPU machine: pixquery's pipeline feeding a CUDA encoder, and the encoder alone.

    PYTHONPATH=src python bench/ingest_gpu.py --photos PHOTOS --out OUT [--cpu-study MODEL_DIR]

Needs only torch (CUDA), numpy and Pillow: the model is a random-weight ViT-B/32 image tower
(OpenAI CLIP's architecture, 224 px, the same compute as models/random-vit-b-32) built here in
torch, because ONNX Runtime's CUDA build cannot be installed on the lent GPU machines (see
docs/performance.md). The pipeline is pixquery's own `embed_files` (decode processes, feeder,
encoder, writer); only the encoder differs. Measured: the encoder alone on preprocessed tensors
(fp32 and fp16, several batch sizes; host-to-device copies included, as in the pipeline), then
end to end on the real photos and on the same photos upscaled to 12 MP.

--cpu-study MODEL_DIR: also compare pipeline settings with ONNX Runtime on the CPU, pinned to 2
cores (taskset), on a quiet machine: MODEL_DIR is an immich-layout folder (its visual tower is
exported here from the torch model when missing).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from pixquery.encoders.base import PreprocessConfig  # noqa: E402
from pixquery.ingest.decode import decode_file, normalize  # noqa: E402
from pixquery.ingest.pipeline import embed_files  # noqa: E402
from pixquery.ingest.scan import FileEntry  # noqa: E402


def vit_b_32(torch):
    """OpenAI CLIP's ViT-B/32 image tower (width 768, 12 layers, 12 heads, patch 32, 224 px, out 512)."""
    nn = torch.nn

    class QuickGELU(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)

    class Block(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, h, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), QuickGELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            y = self.ln_1(x)
            x = x + self.attn(y, y, y, need_weights=False)[0]
            return x + self.mlp(self.ln_2(x))

    class ViT(nn.Module):
        def __init__(self, width=768, layers=12, heads=12, patch=32, size=224, out=512):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
            scale = width**-0.5
            self.class_embedding = nn.Parameter(scale * torch.randn(width))
            self.positional_embedding = nn.Parameter(scale * torch.randn((size // patch) ** 2 + 1, width))
            self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
            self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
            self.proj = nn.Parameter(scale * torch.randn(width, out))

        def forward(self, x):
            x = self.conv1(x).flatten(2).transpose(1, 2)
            cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], 1) + self.positional_embedding.to(x.dtype)
            x = self.blocks(self.ln_pre(x))
            return self.ln_post(x[:, 0]) @ self.proj

    return ViT()


class TorchEncoder:
    """The Encoder protocol over a torch image tower on CUDA (images only)."""

    name, dim, fingerprint = "torch-vit-b-32-random", 512, "torch-random"
    preprocess_cfg = PreprocessConfig()

    def __init__(self, model, torch, dtype, device):
        self.torch, self.dtype, self.device = torch, dtype, device
        self.model = model.to(device=device, dtype=dtype).eval()

    def encode_images(self, batch):
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch))
            if self.device == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            y = self.model(x.to(self.dtype)).float()
            y = torch.nn.functional.normalize(y, dim=-1)
            return y.cpu().numpy()

    def encode_texts(self, texts):
        raise NotImplementedError


def entries(files):
    out = []
    for p in files:
        st = os.stat(p)
        out.append(FileEntry(str(p), st.st_size, st.st_mtime_ns))
    return out


def e2e(encoder, files, batch_size, workers=None, decoder=None) -> tuple[float, dict]:
    got = [0]
    t0 = time.perf_counter()
    stats = embed_files(
        entries(files),
        encoder,
        lambda b: got.__setitem__(0, got[0] + len(b)),
        batch_size=batch_size,
        workers=workers,
        decoder=decoder,
    )
    seconds = time.perf_counter() - t0
    assert got[0] == len(files), (got[0], stats.failed[:3])
    return len(files) / seconds, {
        "wait_decode_s": round(stats.wait_decode_seconds, 2),
        "encode_s": round(stats.encode_seconds, 2),
        "seconds": round(seconds, 2),
        "workers": workers,
    }


def ceiling(encoder, tensors, batch_size, torch, n) -> float:
    encoder.encode_images(tensors[:batch_size])
    if encoder.device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        for i in range(0, len(tensors), batch_size):
            encoder.encode_images(tensors[i : i + batch_size])
            done += len(tensors[i : i + batch_size])
    return done / (time.perf_counter() - t0)


def make_large(files, out: Path):
    from concurrent.futures import ProcessPoolExecutor

    from ingest import make_large as one_set

    out.mkdir(parents=True, exist_ok=True)
    chunks = [files[i::8] for i in range(8)]
    with ProcessPoolExecutor(8) as ex:
        made = list(ex.map(one_set, chunks, [out] * 8))
    return sorted(p for group in made for p in group)


def cpu_study(args, torch, model, files, large, results):
    """ORT on 2 pinned cores: pipeline variants vs encoder alone, interleaved (quiet machine)."""
    mdir = Path(args.cpu_study)
    onnx_path = mdir / "visual" / "model.onnx"
    if not onnx_path.exists():
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        m = copy.deepcopy(model).float().cpu().eval()
        with torch.enable_grad():
            torch.onnx.export(
                m,
                (torch.randn(2, 3, 224, 224),),
                str(onnx_path),
                input_names=["image"],
                output_names=["embedding"],
                dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        (mdir / "visual" / "preprocess_cfg.json").write_text(
            json.dumps(
                {
                    "size": 224,
                    "mean": list(PreprocessConfig().mean),
                    "std": list(PreprocessConfig().std),
                    "interpolation": "bicubic",
                    "resize_mode": "shortest",
                }
            )
        )
        (mdir / "config.json").write_text(json.dumps({"embed_dim": 512, "text_cfg": {"context_length": 77}}))
        (mdir / "textual").mkdir(exist_ok=True)
        (mdir / "textual" / "model.onnx").write_bytes(b"unused")  # the image-only study never loads it
        if not (mdir / "textual" / "tokenizer.json").exists():
            (mdir / "textual" / "tokenizer.json").write_text("{}")
    cmd = [
        sys.executable,
        str(HERE / "ingest_gpu.py"),
        "--cpu-child",
        str(mdir),
        "--photos",
        str(args.photos),
        "--large-dir",
        str(args.large_dir),
        "--limit",
        str(args.cpu_limit),
        "--large",
        str(args.cpu_large),
        "--reps",
        str(args.cpu_reps),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cpu_timeout)
    print(r.stdout[-6000:], r.stderr[-3000:], flush=True)
    try:
        results["cpu_study"] = json.loads(r.stdout.strip().splitlines()[-1])
    except Exception:
        results["cpu_study"] = {"error": r.stderr[-2000:]}


CPU_VARIANTS = {
    "process nice10 nospin": dict(decoder="process", nice=10, spin=False, workers=1),
    "process nice0 nospin": dict(decoder="process", nice=0, spin=False, workers=1),
    "process nice0 spin": dict(decoder="process", nice=0, spin=True, workers=1),
    "thread nice10 nospin": dict(decoder="thread", nice=10, spin=False, workers=1),
    "process nice10 nospin 2w": dict(decoder="process", nice=10, spin=False, workers=2),
}


def cpu_child(args):
    """Runs pinned to 2 cores: ceiling and variants interleaved; prints one JSON line last."""
    os.sched_setaffinity(0, {0, 1})  # before any thread or worker exists: they all inherit it
    from pixquery.encoders.onnx import OnnxClipEncoder

    photos = sorted(Path(args.photos).iterdir())[: args.limit]
    large = sorted(Path(args.large_dir).iterdir())[: args.large]
    encs = {sp: OnnxClipEncoder(args.cpu_child, threads=2, spin=sp, provider="cpu") for sp in (False, True)}
    for e in encs.values():
        e.warm_up(("visual",))
    cfg = encs[False].preprocess_cfg
    tensors = {
        k: normalize(np.stack([decode_file(f, cfg).pixels for f in fs]), cfg)
        for k, fs in (("photos", photos), ("12mp", large))
    }
    runs: dict = {}
    for rep in range(args.reps):
        for label, fs in (("photos", photos), ("12mp", large)):
            for sp, enc in encs.items():
                runs.setdefault(f"{label} ceiling spin={sp}", []).append(
                    ceiling(enc, tensors[label], 32, None, len(fs))
                )
            for name, v in CPU_VARIANTS.items():
                enc = encs[v["spin"]]
                got = [0]
                t0 = time.perf_counter()
                embed_files(
                    entries(fs),
                    enc,
                    lambda b, got=got: got.__setitem__(0, got[0] + len(b)),
                    batch_size=32,
                    workers=v["workers"],
                    decoder=v["decoder"],
                    nice=v["nice"],
                )
                runs.setdefault(f"{label} {name}", []).append(len(fs) / (time.perf_counter() - t0))
            print(
                rep,
                label,
                {k: round(v[-1], 2) for k, v in runs.items() if k.startswith(label)},
                file=sys.stderr,
                flush=True,
            )
    print(json.dumps({k: {"median": statistics.median(v), "runs": v} for k, v in runs.items()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")))
    ap.add_argument("--large", type=int, default=100)
    ap.add_argument("--large-dir", type=Path, default=Path("/tmp/pixquery-12mp"))
    ap.add_argument(
        "--repeat", type=int, default=10, help="index the photo list this many times over (GPU runs are short)"
    )
    ap.add_argument("--batch-sizes", default="64,128,256,512")
    ap.add_argument("--e2e-configs", default="process:,thread:", help="decoder:workers,... (workers empty: default)")
    ap.add_argument("--cpu-study", default=None)
    ap.add_argument("--cpu-child", default=None)
    ap.add_argument("--limit", type=int, default=160)
    ap.add_argument("--cpu-limit", type=int, default=160)
    ap.add_argument("--cpu-large", type=int, default=64)
    ap.add_argument("--cpu-reps", type=int, default=2)
    ap.add_argument("--cpu-timeout", type=int, default=240)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    if args.cpu_child:
        cpu_child(args)
        return 0

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
    }
    try:
        import onnxruntime as ort

        results["onnxruntime"] = f"{ort.__version__} providers {ort.get_available_providers()}"
    except ImportError:
        results["onnxruntime"] = "not installed"
    print(results, flush=True)
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    t0 = time.perf_counter()
    large = make_large(photos[: args.large], args.large_dir)
    print(f"{len(large)} 12 MP photos made in {time.perf_counter() - t0:.1f} s", flush=True)
    torch.manual_seed(0)
    model = vit_b_32(torch).eval()
    cfg = PreprocessConfig()
    tensors = normalize(np.stack([decode_file(f, cfg).pixels for f in photos[:256]]), cfg)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    encs = {"fp32": TorchEncoder(copy.deepcopy(model), torch, torch.float32, device)}
    if device == "cuda":
        encs["fp16"] = TorchEncoder(copy.deepcopy(model), torch, torch.float16, device)
    n_ceiling = 4096 if device == "cuda" else 64
    results["encoder_alone"] = {}
    for dt, enc in encs.items():
        for bs in sizes:
            v = statistics.median(ceiling(enc, tensors, bs, torch, n_ceiling) for _ in range(3))
            results["encoder_alone"][f"{dt} b{bs}"] = v
            print(f"encoder alone {dt} batch {bs}: {v:.0f} img/s", flush=True)
    best = max(results["encoder_alone"], key=results["encoder_alone"].get)
    dt, bs = best.split()[0], int(best.split()[1][1:])
    results["best"] = best
    results["end_to_end"] = {}
    small_list, large_list = photos * args.repeat, large * args.repeat
    configs = [c.split(":") for c in args.e2e_configs.split(",")]
    for _ in range(args.reps):
        for label, fs in (("photos", small_list), ("12 MP photos", large_list)):
            for decoder, workers in configs:
                workers = int(workers) if workers else None
                v, info = e2e(encs[dt], fs, bs, workers, decoder)
                results["end_to_end"].setdefault(f"{label} {dt} b{bs} {decoder} x{workers or 'default'}", []).append(v)
                print(
                    f"end to end {label} ({len(fs)}) {dt} batch {bs} {decoder} x{workers or 'default'}: {v:.0f} img/s {info}",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ingest_gpu.json").write_text(json.dumps(results, indent=2))
    if args.cpu_study:
        try:
            cpu_study(args, torch, model, photos, large, results)
        except Exception as e:  # the GPU figures above are kept
            results["cpu_study"] = {"error": f"{type(e).__name__}: {e}"}
    (args.out / "ingest_gpu.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
