"""Cold CLI query: wall time of one `pixquery search` process (start, imports, library, text tower,
encode, search, print, exit) against rclip's CLI query, in one interleaved run.

    flock /tmp/pixquery-bench.lock python bench/cold_query.py --model models/random-vit-b-32 \\
        --photos /path/to/1000/photos --rounds 30

Each round runs every configuration once, in a shuffled order, each a fresh process with stdout
to a pipe (as a script reads it), a new query each round; p50/p90/p99 of the wall times are
reported with the load average. "Cold" is a new process; the page cache is warm (the model files
were read by the previous rounds), as for anyone who searches more than once.

Configurations (a ladder: each adds one way to the one before; the "before" code is the commit
given by --base, exported with `git archive` into the work folder):
  before                          --base's code: typer CLI, the text tower optimised by ONNX Runtime
                                  at each start, `tokenizers` + ftfy, the build stage imported
  quick entry, lazy imports       this checkout with the two ways below turned off: no typer, no
                                  ingest/PIL/ftfy imports (PIXQUERY_ORT_OPTIMIZED_COPY=0, PIXQUERY_FAST_TOKENIZER=0)
  + pre-optimised tower           the text tower's saved optimised copy, no pre-packing (PIXQUERY_FAST_TOKENIZER=0)
  + fast tokenizer                the pure Python BPE for ASCII queries: this checkout's default without a daemon
  (the same through typer)        PIXQUERY_FULL_CLI=1: what the quick entry saves
  + daemon                        this checkout's default with `pixquery daemon` running for the library
  rclip -n                        rclip 3.3.0, query only (--no-indexing), its ViT-B/32 (256 px) text tower
  rclip                           rclip as usually run: checks the folder for changes first
All pixquery configurations but the daemon run with PIXQUERY_NO_DAEMON=1.

The pixquery library and rclip's database are made in --work if missing (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from ingest import load_avg  # noqa: E402
from machine import describe, markdown  # noqa: E402
from query_words import WORDS  # noqa: E402

PEERS = Path(os.environ.get("PIXQUERY_PEERS", "/work/peers"))
RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"


def pct(values, q):
    return float(np.percentile(values, q, method="nearest" if q == 99 else "linear"))


def base_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode compiled
    for key in (
        "PIXQUERY_FULL_CLI",
        "PIXQUERY_NO_DAEMON",
        "PIXQUERY_ORT_OPTIMIZED_COPY",
        "PIXQUERY_FAST_TOKENIZER",
        "PIXQUERY_LIBRARY",
    ):
        env.pop(key, None)
    return env


def export_base(commit: str, dest: Path) -> Path:
    if not (dest / "src" / "pixquery").is_dir():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit, "src"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def ensure_rclip_data(args, work: Path) -> Path:
    data = work / "rclip-data"
    (data / RCLIP_SUBDIR).mkdir(parents=True, exist_ok=True)
    (data / "tokenizer").mkdir(exist_ok=True)
    src = PEERS / "rclip-data"
    for rel in (
        f"{RCLIP_SUBDIR}/visual.onnx",
        f"{RCLIP_SUBDIR}/textual.onnx",
        "tokenizer/bpe_simple_vocab_16e6.txt.gz",
    ):
        if not (data / rel).exists():
            (data / rel).symlink_to(src / rel)
    if not (data / "db.sqlite3").exists():
        print("rclip: indexing the photos once (its database) ...", flush=True)
        subprocess.run(
            [str(PEERS / "rclip-venv" / "bin" / "rclip"), "-f", "-t", "1", "a photo"],
            cwd=args.photos,
            env=dict(base_env(), RCLIP_DATADIR=str(data)),
            check=True,
            capture_output=True,
        )
    return data


def ensure_library(args, work: Path) -> Path:
    lib = work / "lib"
    if not (lib / "catalog.sqlite").exists():
        print("pixquery: indexing the photos once ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pixquery.cli",
                "index",
                str(args.photos),
                "-L",
                str(lib),
                "-m",
                str(Path(args.model).resolve()),
                "-q",
            ],
            env=dict(base_env(), PYTHONPATH=str(REPO / "src")),
            check=True,
        )
    return lib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument(
        "--photos", type=Path, required=True, help="a folder of photos (rclip indexes the folder it runs in)"
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/pixquery-cold-bench"))
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--base", default=None, help="commit of the 'before' row (default: none)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--no-rclip", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cold_query")
    args = ap.parse_args()
    args.photos = args.photos.resolve()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    lib = ensure_library(args, work)
    env = base_env()
    here_src = str(REPO / "src")
    search = [sys.executable, "-m", "pixquery.cli", "search"]
    configs: dict[str, tuple[list, dict, str | None]] = {}  # name -> (argv before the query, env, cwd)
    tail = ["-L", str(lib), "-k", str(args.k)]
    if args.base:
        base_src = export_base(args.base, work / f"base-{args.base[:12]}")
        configs[f"before ({args.base[:7]})"] = (search, dict(env, PYTHONPATH=str(base_src)), None)
    local = dict(env, PYTHONPATH=here_src, PIXQUERY_NO_DAEMON="1")
    configs["quick entry, lazy imports"] = (
        search,
        dict(local, PIXQUERY_ORT_OPTIMIZED_COPY="0", PIXQUERY_FAST_TOKENIZER="0"),
        None,
    )
    configs["+ pre-optimised tower"] = (search, dict(local, PIXQUERY_FAST_TOKENIZER="0"), None)
    configs["+ fast tokenizer (default, in process)"] = (search, local, None)
    configs["(the same through typer)"] = (search, dict(local, PIXQUERY_FULL_CLI="1"), None)
    configs["+ daemon"] = (search, dict(env, PYTHONPATH=here_src), None)
    if not args.no_rclip:
        data = ensure_rclip_data(args, work)
        rclip = [str(PEERS / "rclip-venv" / "bin" / "rclip")]
        renv = dict(env, RCLIP_DATADIR=str(data))
        configs["rclip -n (query only)"] = (rclip + ["-n", "-t", str(args.k)], renv, str(args.photos))
        configs["rclip"] = (rclip + ["-t", str(args.k)], renv, str(args.photos))

    def argv_for(name, query):
        argv, _, _ = configs[name]
        return argv + [query] + (tail if argv is search else [])

    daemon = subprocess.Popen(
        [sys.executable, "-m", "pixquery.cli", "daemon", "-L", str(lib)],
        env=dict(env, PYTHONPATH=here_src),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = daemon.stderr.readline()
        if "answering" not in line:
            raise SystemExit(f"the daemon did not start: {line}{daemon.stderr.read()}")
        # warm-up (not timed): bytecode, the text tower's copies, the page cache
        outputs = {}
        for name, (_argv, cenv, cwd) in configs.items():
            for _ in range(2):
                r = subprocess.run(
                    argv_for(name, "a photo of a dog"), env=cenv, cwd=cwd, capture_output=True, text=True
                )
                if r.returncode != 0:
                    raise SystemExit(f"{name} failed: {r.stderr}")
            outputs[name] = r.stdout
        pix = [n for n in configs if not n.startswith("rclip")]
        paths = {n: [line.split("\t")[3] for line in outputs[n].splitlines()] for n in pix}
        same = all(paths[n] == paths[pix[0]] for n in pix)
        rng = random.Random(0)
        times: dict[str, list[float]] = {n: [] for n in configs}
        load_before = load_avg()
        loads = []
        t_start = time.time()
        for i in range(args.rounds):
            order = list(configs)
            rng.shuffle(order)
            query = f"a photo of a {' '.join(rng.sample(WORDS, 3))} {i}"
            for name in order:
                argv, cenv, cwd = configs[name]
                t0 = time.perf_counter()
                r = subprocess.run(
                    argv_for(name, query), env=cenv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
                )
                times[name].append(time.perf_counter() - t0)
                if r.returncode != 0:
                    raise SystemExit(f"{name} failed on round {i}")
            loads.append(os.getloadavg()[0])
        load_after = load_avg()
        seconds = time.time() - t_start
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)

    rclip_p50 = float(np.median(times["rclip -n (query only)"])) if "rclip -n (query only)" in times else None
    rows = []
    for name, v in times.items():
        p50 = float(np.median(v))
        rows.append(
            {
                "config": name,
                "p50_s": p50,
                "p90_s": pct(v, 90),
                "p99_s": pct(v, 99),
                "min_s": float(min(v)),
                "rclip_n_over_this": (rclip_p50 / p50) if rclip_p50 else None,
                "runs": len(v),
            }
        )
    machine = describe()
    cmd = (
        f"flock /tmp/pixquery-bench.lock python bench/cold_query.py --model {args.model} --photos PHOTOS "
        f"--rounds {args.rounds}" + (f" --base {args.base}" if args.base else "")
    )
    lines = [
        "# Cold CLI query: pixquery vs rclip (one process per query, interleaved)",
        "",
        f"Command: `{cmd}` (PHOTOS: {len(list(args.photos.iterdir()))} files)",
        "",
        markdown(machine),
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}; 1-min load during the run: "
        f"median {np.median(loads):.2f}, max {max(loads):.2f}. {args.rounds} rounds in {seconds:.0f} s.",
        "",
        f"Same result paths from every pixquery configuration (warm-up query): {'yes' if same else 'NO'}.",
        "",
        "| configuration | p50 (s) | p90 (s) | p99 (s) | min (s) | rclip -n p50 / this p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['rclip_n_over_this']:.2f}x" if r["rclip_n_over_this"] else ""
        lines.append(
            f"| {r['config']} | {r['p50_s']:.3f} | {r['p90_s']:.3f} | {r['p99_s']:.3f} | {r['min_s']:.3f} | {ratio} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "machine": machine,
                "command": cmd,
                "rows": rows,
                "times": times,
                "load_before": load_before,
                "load_after": load_after,
                "load_during": loads,
                "same_paths": same,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
