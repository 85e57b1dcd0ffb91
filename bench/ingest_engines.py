"""The Ray engine against the local pipeline on one machine: images/s and their ratio.

    python scripts/make_tiny_models.py --full      # models/random-vit-b-32 (full size, random weights)
    flock /tmp/pixquery-bench.lock python bench/ingest_engines.py --model models/random-vit-b-32 \
        --photos ../shared/data/imagenet-sample-images --limit 1000

1. local: `pipeline.embed_files` (decoders in processes, encoder in this process), the writer a
   no-op, images/s over the call (the encoder is loaded before; its warm-up is inside, as in index);
2. ray, 1 node: a local Ray (`connect(None)`: 2x the cores as logical CPUs), `embed_stream` consumed
   to the end; images/s over the call (actors start and load the model inside it, as in a job),
   and the seconds until the first result (that fixed cost, which a bigger job amortises);
3. ray, 2 nodes: two `ray start` node processes on this machine (2 logical CPUs each), the same.
The issue's target: ray on one machine >= 0.85 of local. Runs are interleaved per repetition and
medians reported, with the load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, markdown  # noqa: E402

from pixquery.encoders.registry import load_encoder  # noqa: E402
from pixquery.ingest import pipeline  # noqa: E402
from pixquery.ingest.executors import ray as ray_exec  # noqa: E402
from pixquery.ingest.scan import IMAGE_EXTENSIONS, FileEntry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def load_avg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def entries(folder: Path, limit: int | None) -> list[FileEntry]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[: limit or None]
    return [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def run_local(model: str, files: list[FileEntry], batch_size: int) -> dict:
    enc = load_encoder(model)
    t0 = time.perf_counter()
    stats = pipeline.embed_files(files, enc, lambda batch: None, batch_size=batch_size)
    dt = time.perf_counter() - t0
    assert stats.embedded + len(stats.failed) == len(files)
    return {"images_per_second": stats.embedded / dt, "seconds": dt}


def run_ray(model: str, files: list[FileEntry], batch_size: int, address: str | None) -> dict:
    t_start = time.perf_counter()
    with ray_exec.connect(address):
        t_up = time.perf_counter()
        info = ray_exec.describe_model(model)
        t0 = time.perf_counter()
        n = 0
        first = None
        for batch in ray_exec.embed_stream(files, info, batch_size=batch_size):
            first = first or time.perf_counter() - t0
            n += batch.num_rows
        dt = time.perf_counter() - t0
    assert n == len(files), (n, len(files))
    # first_result_seconds: actors started, model loaded, first batch through (the fixed cost a
    # bigger job amortises). Results come in bursts, so no "steady" rate is derived from them.
    return {
        "images_per_second": n / dt,
        "seconds": dt,
        "first_result_seconds": first,
        "ray_start_seconds": t_up - t_start,
    }


class TwoNodes:
    """Two `ray start` node processes on this machine; stopped by pid (never `ray stop`)."""

    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="pxbench", dir="/tmp"))
        # Ray's token (RAY_AUTH_MODE=token, set by main() for this process too): one process
        # keeps the token it first read, so the cluster must use the same (~/.ray/auth_token).
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        self.address = None

    def __enter__(self):
        for name in ("head", "node1"):
            ports = []
            for _ in range(8):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    ports.append(s.getsockname()[1])
            (self.base / name).mkdir()
            cmd = [
                str(Path(sys.executable).parent / "ray"),
                "start",
                "--num-cpus",
                "2",
                "--temp-dir",
                str(self.base / name),
                "--node-ip-address",
                "127.0.0.1",
                "--disable-usage-stats",
                "--object-store-memory",
                str(1 << 30),
                "--node-manager-port",
                str(ports[0]),
                "--object-manager-port",
                str(ports[1]),
                "--dashboard-agent-listen-port",
                str(ports[2]),
                "--dashboard-agent-grpc-port",
                str(ports[3]),
                "--runtime-env-agent-port",
                str(ports[4]),
                "--metrics-export-port",
                str(ports[5]),
            ]
            cmd += (
                ["--head", "--port", str(ports[6]), "--include-dashboard=false", "--dashboard-port", str(ports[7])]
                if name == "head"
                else ["--address", self.address]
            )
            subprocess.run(cmd, env=self.env, check=True, capture_output=True, timeout=120)
            if name == "head":
                self.address = f"127.0.0.1:{ports[6]}"
        return self

    def __exit__(self, *exc):
        mark = str(self.base)
        pids = set()
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and mark in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace"
                ):
                    pids.add(int(d.name))
            except OSError:
                pass
        for d in Path("/proc").iterdir():  # their children (workers)
            try:
                if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) in pids:
                    pids.add(int(d.name))
            except (OSError, ValueError):
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(3)
        shutil.rmtree(self.base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument("--photos", type=Path, default=Path("../shared/data/imagenet-sample-images"))
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", default="ingest_engines")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    files = entries(args.photos, args.limit)
    runs: dict[str, list[dict]] = {"local": [], "ray_1_node": [], "ray_2_nodes": []}
    load = [load_avg()]
    for _ in range(args.reps):
        runs["local"].append(run_local(args.model, files, args.batch_size))
        runs["ray_1_node"].append(run_ray(args.model, files, args.batch_size, None))
        with TwoNodes() as cluster:
            runs["ray_2_nodes"].append(run_ray(args.model, files, args.batch_size, cluster.address))
        load.append(load_avg())
    med = {k: statistics.median(r["images_per_second"] for r in v) for k, v in runs.items()}
    first = {k: statistics.median(r["first_result_seconds"] for r in v) for k, v in runs.items() if k != "local"}
    out = {
        "machine": describe(("numpy", "pillow", "onnxruntime", "ray", "pyarrow")),
        "photos": len(files),
        "model": args.model,
        "batch_size": args.batch_size,
        "reps": args.reps,
        "load_avg": load,
        "runs": runs,
        "median_images_per_second": med,
        "median_first_result_seconds": first,
        "ratio_to_local": {k: med[k] / med["local"] for k in med if k != "local"},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=2))
    lines = [
        f"# Ray engine vs local pipeline ({len(files)} photos, {Path(args.model).name}, batch {args.batch_size})",
        "",
        markdown(out["machine"]),
        f"Load average before/after each repetition: {', '.join(load)}.",
        "",
        "| engine | images/s (whole call) | first result after (s) | ratio to local |",
        "|---|---|---|---|",
    ]
    for k in med:
        ratio = "1.00" if k == "local" else f"{out['ratio_to_local'][k]:.2f}"
        st = f"{first[k]:.1f}" if k in first else "-"
        lines.append(f"| {k} | {med[k]:.1f} | {st} | {ratio} |")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
