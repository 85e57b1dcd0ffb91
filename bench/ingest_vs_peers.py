"""pixquery's indexing speed side by side with rclip and clip-retrieval, same photos, same machine.

    flock /tmp/pixquery-bench.lock python bench/ingest_vs_peers.py --reps 2 --large 200

Every tool indexes the same folder from scratch as a whole process (`pixquery index`, `rclip`,
`clip-retrieval inference`), timed from start to exit: images/s = photos / wall seconds.
"after start-up" removes each tool's fixed cost (interpreter, imports, model load, warm-up): the
same tool also indexes a small set (--startup-photos) and the rate is the difference,
(N - n) / (T_N - T_n). The encoder-alone ceilings run in this process on preprocessed tensors.
Runs are interleaved (every tool once, then the next repetition) and medians reported, so
background load falls on every tool alike; the load average is recorded.

Tools (set up as bench/peers/README.md says; all with random weights: speed does not depend on them):
  pixquery fp32 / int8    this checkout, ViT-B/32 224 px (models/random-vit-b-32)
  rclip                   rclip 3.3.0 as shipped: ViT-B/32 at 256 px (its only model; 1.3x our compute)
  rclip @224              the same rclip code with a ViT-B/32 224 px model, its input size set to 224
  clip-retrieval          clip-retrieval 2.45.0 `inference` (torch, OpenAI ViT-B/32 224 px), batch 32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from ingest import load_avg, make_large, photos_in, preprocessed  # noqa: E402
from machine import describe, markdown  # noqa: E402

PEERS = Path(os.environ.get("PIXQUERY_PEERS", "/work/peers"))
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"


def encode_all(encoder, tensors: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
    """encoder_ceiling that keeps the vectors (for the int8 agreement)."""
    encoder.encode_images(tensors[:batch_size])
    out = []
    t0 = time.perf_counter()
    for i in range(0, len(tensors), batch_size):
        out.append(encoder.encode_images(tensors[i : i + batch_size]))
    return len(tensors) / (time.perf_counter() - t0), np.concatenate(out)


QUERIES = [
    "a dog",
    "a cat on a sofa",
    "a red sports car",
    "a bird on a branch",
    "a beach at sunset",
    "a bowl of soup",
    "a snowy mountain",
    "a person playing guitar",
    "a ship at sea",
    "a close-up of a flower",
    "a fish",
    "a tree",
    "an old building",
    "a plane in the sky",
    "a computer keyboard",
    "a pizza",
    "a horse in a field",
    "a bicycle",
    "a clock",
    "a spider web",
]


def int8_agreement(encoders: dict, vectors: dict) -> dict:
    """Cosine of int8 vs fp32 image embeddings, and the overlap of the top 10 of text queries over
    the collection (each precision ranking with its own text tower), as the issue asks."""
    cos = (vectors["fp32"] * vectors["int8"]).sum(1)
    overlaps = []
    for q in QUERIES:
        tops = [set(np.argsort(-(vectors[p] @ encoders[p].encode_texts([q])[0]))[:10]) for p in ("fp32", "int8")]
        overlaps.append(len(tops[0] & tops[1]) / 10)
    text_cos = [float(encoders["fp32"].encode_texts([q])[0] @ encoders["int8"].encode_texts([q])[0]) for q in QUERIES]
    return {
        "images": len(cos),
        "image_cosine_mean": float(cos.mean()),
        "image_cosine_min": float(cos.min()),
        "text_cosine_mean": float(np.mean(text_cos)),
        "text_cosine_min": float(np.min(text_cos)),
        "top10_overlap_mean": float(np.mean(overlaps)),
        "top10_overlap_min": float(np.min(overlaps)),
        "queries": len(QUERIES),
    }


def link_folder(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return folder


class Tool:
    name = ""

    def available(self) -> str | None:
        """None if it can run here, else why not."""
        return None

    def command(self, folder: Path, work: Path) -> tuple[list[str], dict, Path | None]:
        raise NotImplementedError

    def run(self, folder: Path, n: int, work: Path) -> float:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        cmd, env, cwd = self.command(folder, work)
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **env)
        t0 = time.perf_counter()
        r = subprocess.run(cmd, env=full_env, cwd=cwd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{self.name} failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr[-3000:]}")
        self.check(work, n, r)
        shutil.rmtree(work, ignore_errors=True)
        return seconds

    def check(self, work: Path, n: int, r) -> None:
        pass


class Pixquery(Tool):
    def __init__(self, model: Path, precision: str, batch_size: int):
        self.model, self.precision, self.batch_size = model, precision, batch_size
        self.name = f"pixquery {precision}"

    def command(self, folder, work):
        return (
            [
                sys.executable,
                "-m",
                "pixquery.cli",
                "index",
                str(folder),
                "-L",
                str(work / "lib"),
                "-m",
                str(self.model),
                "--precision",
                self.precision,
                "--batch-size",
                str(self.batch_size),
                "--json",
            ],
            {},
            None,
        )

    def check(self, work, n, r):
        report = json.loads(r.stdout)
        assert report["indexed"] == n and not report["failed"], (report["indexed"], report["failed"][:3])


class Rclip(Tool):
    def __init__(self, datadir: Path, size: int | None):
        self.datadir, self.size = datadir, size
        self.name = "rclip" if size is None else f"rclip @{size}"
        self.exe = PEERS / "rclip-venv" / "bin"

    def available(self):
        if not (self.exe / "rclip").exists():
            return f"{self.exe / 'rclip'} not installed (bench/peers/README.md)"
        if not (self.datadir / RCLIP_SUBDIR / "visual.onnx").exists():
            return f"no model in {self.datadir} (bench/peers/make_peer_models.py rclip)"
        return None

    def command(self, folder, work):
        data = work / "data"  # a fresh database each run; the model files are links
        (data / RCLIP_SUBDIR).mkdir(parents=True)
        for f in ("visual.onnx", "textual.onnx"):
            (data / RCLIP_SUBDIR / f).symlink_to(self.datadir / RCLIP_SUBDIR / f)
        (data / "tokenizer").symlink_to(self.datadir / "tokenizer")
        if self.size is None:
            cmd = [str(self.exe / "rclip"), "-f", "-t", "1", "a photo"]
        else:  # same code, its preprocessing told the model's input size (a setting, not a code change)
            cmd = [
                str(self.exe / "python"),
                "-c",
                f"import sys, rclip.utils.preprocess as p; p.IMAGE_SIZE = {self.size}; from rclip.main import main; "
                "sys.argv = ['rclip', '-f', '-t', '1', 'a photo']; main()",
            ]
        return cmd, {"RCLIP_DATADIR": str(data)}, folder

    def check(self, work, n, r):
        import sqlite3

        db = sqlite3.connect(work / "data" / "db.sqlite3")
        got = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        db.close()
        assert got == n, f"rclip indexed {got} of {n}"


class ClipRetrieval(Tool):
    name = "clip-retrieval"

    def __init__(self, state_dict: Path, batch_size: int):
        self.state_dict, self.batch_size = state_dict, batch_size
        self.exe = PEERS / "clip-retrieval-venv" / "bin" / "clip-retrieval"

    def available(self):
        if not self.exe.exists():
            return f"{self.exe} not installed (bench/peers/README.md)"
        if not self.state_dict.exists():
            return f"no {self.state_dict} (bench/peers/make_peer_models.py clip-retrieval)"
        return None

    def command(self, folder, work):
        return (
            [
                str(self.exe),
                "inference",
                "--input_dataset",
                str(folder),
                "--output_folder",
                str(work / "out"),
                "--input_format",
                "files",
                "--clip_model",
                str(self.state_dict),
                "--batch_size",
                str(self.batch_size),
                "--enable_text",
                "False",
                "--enable_metadata",
                "False",
                "--use_jit",
                "False",
            ],
            {},
            None,
        )

    def check(self, work, n, r):
        got = sum(len(np.load(p, mmap_mode="r")) for p in (work / "out" / "img_emb").glob("*.npy"))
        assert got == n, f"clip-retrieval embedded {got} of {n}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "random-vit-b-32")
    ap.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/imagenet-sample-images/images")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--large", type=int, default=200, help="N of the photos upscaled to 12 MP (0: none)")
    ap.add_argument("--large-dir", type=Path, default=None)
    ap.add_argument("--startup-photos", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--tools", default="pixquery fp32,pixquery int8,rclip,rclip @224,clip-retrieval")
    ap.add_argument("--rclip-data", type=Path, default=PEERS / "rclip-data")
    ap.add_argument("--rclip-data-224", type=Path, default=PEERS / "rclip-data-224")
    ap.add_argument("--clip-retrieval-model", type=Path, default=PEERS / "clip-retrieval-data" / "ViT-B-32-random.pt")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ingest_vs_peers")
    args = ap.parse_args()

    from pixquery.encoders.registry import load_encoder

    all_tools = [
        Pixquery(args.model, "fp32", args.batch_size),
        Pixquery(args.model, "int8", args.batch_size),
        Rclip(args.rclip_data, None),
        Rclip(args.rclip_data_224, 224),
        ClipRetrieval(args.clip_retrieval_model, args.batch_size),
    ]
    wanted = [t.strip() for t in args.tools.split(",")]
    tools, skipped = [], {}
    for t in all_tools:
        if t.name in wanted:
            why = t.available()
            (skipped.__setitem__(t.name, why) if why else tools.append(t))
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)

    files = photos_in(args.photos, args.limit)
    sets = [("photos", files)]
    tmp = Path(tempfile.mkdtemp(prefix="pixquery-peers-"))
    if args.large:
        sets.append(("12 MP photos", make_large(files[: args.large], args.large_dir or tmp / "12mp")))
    folders = {label: (link_folder(group, tmp / f"set{i}"), len(group)) for i, (label, group) in enumerate(sets)}
    small = {
        label: (link_folder(group[: args.startup_photos], tmp / f"small{i}"), len(group[: args.startup_photos]))
        for i, (label, group) in enumerate(sets)
    }

    encoders = {p: load_encoder(str(args.model), precision=p) for p in ("fp32", "int8")}
    tensors = {label: preprocessed(encoders["fp32"], group) for label, group in sets}
    for t in tools:  # first runs make caches (the int8 copy) outside the clock
        t.run(small[sets[0][0]][0], small[sets[0][0]][1], tmp / "work")

    load_before = load_avg()
    vectors: dict[str, np.ndarray] = {}
    runs: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for label, _ in sets:
            folder, n = folders[label]
            sfolder, sn = small[label]
            for p, enc in encoders.items():
                speed, vecs = encode_all(enc, tensors[label], args.batch_size)
                runs.setdefault((label, f"encoder alone {p}"), []).append(speed)
                if label == "photos":
                    vectors[p] = vecs
            for t in tools:
                whole = t.run(folder, n, tmp / "work")
                start = t.run(sfolder, sn, tmp / "work")
                runs.setdefault((label, t.name), []).append(n / whole)
                runs.setdefault((label, t.name + " after start-up"), []).append(
                    (n - sn) / (whole - start) if whole > start else float("nan")
                )
                print(
                    f"rep {rep + 1} {label:>12} {t.name:>15}: {n / whole:6.2f} img/s whole run "
                    f"({whole:.1f} s; {sn} photos: {start:.1f} s)  [load {load_avg()}]",
                    flush=True,
                )
    load_after = load_avg()
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        agreement = int8_agreement(encoders, vectors)
    except Exception as e:  # never lose the timings to this
        agreement = {"error": f"{type(e).__name__}: {e}"}

    med = {k: statistics.median(v) for k, v in runs.items()}
    peers = [t.name for t in tools if not t.name.startswith("pixquery")]
    rows = []
    for label, group in sets:
        ceiling = med[(label, "encoder alone fp32")]
        faster = max(peers, key=lambda p: med[(label, p)]) if peers else None
        for name in [t.name for t in tools] + ["encoder alone fp32", "encoder alone int8"]:
            row = {
                "set": label,
                "images": len(group),
                "tool": name,
                "images_per_s": med[(label, name)],
                "runs": runs[(label, name)],
                "after_startup": med.get((label, name + " after start-up")),
            }
            if name.startswith("pixquery"):
                row["vs_ceiling"] = row["images_per_s"] / ceiling
                for p in peers:
                    row[f"x {p}"] = row["images_per_s"] / med[(label, p)]
            rows.append(row)
        rows.append({"set": label, "faster_peer": faster})

    machine = describe()
    cmd = (
        f"python bench/ingest_vs_peers.py --reps {args.reps} --large {args.large}"
        + (f" --limit {args.limit}" if args.limit else "")
        + f" --batch-size {args.batch_size}"
    )
    lines = [
        "# Indexing speed: pixquery vs rclip and clip-retrieval",
        "",
        f"Command: `flock /tmp/pixquery-bench.lock {cmd}`",
        "",
        markdown(machine),
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.",
        "",
        f"Medians of {args.reps} interleaved repetitions. images/s = photos / wall time of the whole process "
        f"(start-up included); 'after start-up' = (N - {args.startup_photos}) / (T_N - T_{args.startup_photos}).",
        "",
    ]
    for skipped_name, why in skipped.items():
        lines.append(f"Not run: {skipped_name}: {why}")
    for label, group in sets:
        lines += [
            "",
            f"## {label} ({len(group)})",
            "",
            "| tool | images/s (whole run) | after start-up | "
            + " | ".join(f"pixquery / {p}" for p in peers)
            + " | / encoder alone fp32 |",
            "|---|---:|---:|" + "---:|" * len(peers) + "---:|",
        ]
        for r in rows:
            if r.get("set") != label or "tool" not in r:
                continue
            ratios = " | ".join(f"{r[f'x {p}']:.2f}x" if f"x {p}" in r else "" for p in peers)
            after = (
                f"{r['after_startup']:.2f}"
                if r.get("after_startup") == r.get("after_startup") and r.get("after_startup")
                else ""
            )
            vs = f"{r['vs_ceiling']:.3f}" if "vs_ceiling" in r else ""
            lines.append(f"| {r['tool']} | {r['images_per_s']:.2f} | {after} | {ratios} | {vs} |")
        faster = next(r["faster_peer"] for r in rows if r.get("set") == label and "faster_peer" in r)
        if faster:
            lines.append(f"\nFaster peer on this set: {faster}.")
    if "error" in agreement:
        lines += ["", f"int8 agreement not computed: {agreement['error']}"]
    else:
        lines += [
            "",
            "## int8 agreement with fp32 (same photos, random weights)",
            "",
            f"Image embeddings: cosine mean {agreement['image_cosine_mean']:.5f}, min {agreement['image_cosine_min']:.5f} "
            f"({agreement['images']} photos); text embeddings: mean {agreement['text_cosine_mean']:.5f}, min "
            f"{agreement['text_cosine_min']:.5f}; top-10 results of {agreement['queries']} text queries over the photos: "
            f"overlap mean {agreement['top10_overlap_mean']:.2f}, min {agreement['top10_overlap_min']:.2f}.",
            "Random weights make every embedding nearly alike (pairwise cosine ~0.7), so the top-10 overlap is a",
            "harsh test here; the effect of int8 on accuracy with real weights is not yet measured, so int8 stays opt-in.",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "machine": machine,
                "command": cmd,
                "load_before": load_before,
                "load_after": load_after,
                "rows": rows,
                "skipped": skipped,
                "int8_agreement": agreement,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
