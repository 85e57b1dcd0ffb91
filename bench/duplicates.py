"""Duplicate finding at 100k and 1M photos: time and recall of planted groups.

    python bench/duplicates.py --sizes 100000 1000000 --nprobe 4 8 16 --library-sizes 100000
    (writes bench/results/duplicates.md and .json)

The collection is bench/synthetic.py's CLIP-like image vectors (scenes, classes, bursts) with
planted groups added: a source photo and 1-3 copies of it, each either the very same vector (an
exact copy: what a byte copy embeds to) or the source moved by a random angle whose angular
distance is spread over 0.02-0.075 (a resized or recompressed copy, below the default threshold
0.10 of pixquery.duplicates). A planted group is recalled when all its members end in one found
group. The synthetic generator's own bursts (near-copies of the previous photo) are genuine
near-duplicates too: they make up most of the other groups found, which are counted, not scored.

What is timed:
* `vectors`: pixquery.duplicates.near_pairs (IVF build: k-means training + adding; the range
  search) and group_ids (connected components), on the vectors in memory;
* `library`: Library-level find_duplicates on a real SQLite catalog holding the same photos as
  image rows + embeddings (so reading 10^5-10^6 embeddings out of SQLite and the rows of the group
  members count); exact copies also share a sha256 there.
* `all pairs` (the baseline the issue rules out): an exact range search (IndexFlatIP: every pair)
  at the smallest size, and its quadratic extrapolation to the others.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import machine  # noqa: E402
import synthetic  # noqa: E402

from pixquery import duplicates as dup  # noqa: E402

PLANTED_SHARE = 0.01  # planted groups per photo
EXACT_SHARE = 0.3  # of the planted copies, the share that is an exact copy


def planted_collection(n: int, seed: int = 0) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """(vectors (n, 512), planted groups as lists of rows, exact: bool per row, a byte copy)."""
    rng = np.random.default_rng(seed + 1)
    groups_n = int(n * PLANTED_SHARE)
    sizes = rng.integers(2, 5, groups_n)  # a source and 1-3 copies
    n_copies = int((sizes - 1).sum())
    x = synthetic.images(n - n_copies, seed=seed)
    x = np.concatenate([x, np.empty((n_copies, x.shape[1]), np.float32)])
    sources = rng.choice(n - n_copies, size=groups_n, replace=False)
    exact = np.zeros(n, bool)
    groups, row = [], n - n_copies
    for src, size in zip(sources.tolist(), sizes.tolist()):
        members = [src]
        for _ in range(size - 1):
            if rng.random() < EXACT_SHARE:
                x[row] = x[src]
                exact[row] = True
            else:
                angle = math.pi * rng.uniform(0.02, 0.075)  # the angular distance to the source
                r = rng.standard_normal(x.shape[1]).astype(np.float32)
                r -= (r @ x[src]) * x[src]
                r /= np.linalg.norm(r)
                x[row] = math.cos(angle) * x[src] + math.sin(angle) * r
            members.append(row)
            row += 1
        groups.append(members)
    # shuffle, so copies are not all at the end (ids interleave as in a library)
    perm = rng.permutation(n)
    inverse = np.empty(n, np.int64)
    inverse[perm] = np.arange(n)
    return x[perm], [inverse[g].tolist() for g in groups], exact[perm]


def recall(planted: list[list[int]], found: list[list[int]]) -> tuple[float, float, int]:
    """(share of planted groups found whole in one group, share of planted pairs found in one
    group, found groups that hold no planted photo)."""
    group_of = {}
    for n, g in enumerate(found):
        for i in g:
            group_of[i] = n
    whole = sum(len({group_of.get(i, -1 - i) for i in g}) == 1 for g in planted)
    pairs = sum(len(g) - 1 for g in planted)
    pairs_found = sum(
        group_of.get(i) is not None and group_of.get(i) == group_of.get(g[0]) for g in planted for i in g[1:]
    )
    planted_rows = {i for g in planted for i in g}
    other = sum(not (set(g) & planted_rows) for g in found)
    return whole / len(planted), pairs_found / pairs, other


def run_vectors(x: np.ndarray, planted, threshold: float, nprobe: int | None, exact_max: int = dup.EXACT_MAX) -> dict:
    c0 = time.process_time()
    t0 = time.perf_counter()
    marks = {}
    first, second, method = dup.near_pairs(
        x,
        threshold,
        nprobe=nprobe,
        exact_max=exact_max,
        progress=lambda d, t: marks.setdefault("first_batch", time.perf_counter()),
    )
    t1 = time.perf_counter()
    groups = dup.group_ids(np.arange(len(x)), first, second, [])
    t2 = time.perf_counter()
    whole, pairs, other = recall(planted, groups)
    return {
        "method": method,
        "pairs": int(len(first)),
        "groups": len(groups),
        "seconds": t2 - t0,
        "cpu_s": time.process_time() - c0,
        "range_search_s": t1 - t0,
        "components_s": t2 - t1,
        "group_recall": whole,
        "pair_recall": pairs,
        "other_groups": other,
    }


def run_library(x: np.ndarray, exact: np.ndarray, planted, threshold: float, nprobe: int | None) -> dict:
    """find_duplicates on a real catalog: image rows (exact copies share their source's sha256)
    and embeddings, written in one transaction per 50k rows."""
    from pixquery.catalog import Catalog

    source_of = {}
    for g in planted:
        for i in g[1:]:
            if exact[i]:
                source_of[i] = g[0]
    with tempfile.TemporaryDirectory(prefix="pixquery-dups-") as tmp:
        cat = Catalog(Path(tmp) / "catalog.sqlite")
        with cat.transaction():
            model = cat.ensure_model("synthetic", "synthetic-fp", x.shape[1])
        t_write = time.perf_counter()
        for lo in range(0, len(x), 50_000):
            with cat.transaction():
                for i in range(lo, min(len(x), lo + 50_000)):
                    sha = f"{source_of.get(i, i):064x}"
                    image_id = cat.upsert_image(
                        f"/photos/{i // 1000:04d}/{i:07d}.jpg", 2_000_000 + i, 1_600_000_000 + i, sha, 4000, 3000
                    )
                    cat.put_image_embedding(model.id, image_id, x[i])
        t_write = time.perf_counter() - t_write
        c0, t0 = time.process_time(), time.perf_counter()
        report = dup.find_duplicates(cat, model, threshold=threshold, nprobe=nprobe)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        found = [[int(Path(m.path).stem) for m in g.members] for g in report.groups]  # the row is in the name
        cat.close()
    whole, pairs, other = recall(planted, found)
    return {
        "method": report.method,
        "groups": len(report.groups),
        "seconds": seconds,
        "cpu_s": cpu,
        "group_recall": whole,
        "pair_recall": pairs,
        "other_groups": other,
        "catalog_write_s": t_write,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument(
        "--nprobe-large",
        type=int,
        nargs="*",
        default=[8],
        help="nprobe values above 200k vectors (none: only the library run)",
    )
    ap.add_argument(
        "--library-sizes", type=int, nargs="*", default=[100_000], help="also run find_duplicates on a catalog"
    )
    ap.add_argument(
        "--all-pairs", type=int, default=100_000, help="time the exact all-pairs range search at this size (0: skip)"
    )
    ap.add_argument("--threshold", type=float, default=dup.DEFAULT_THRESHOLD)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "duplicates")
    ap.add_argument("--append", action="store_true", help="add this run to the results file instead of replacing it")
    ap.add_argument("--note", default="", help="a sentence about the machine, printed with the run")
    args = ap.parse_args()

    desc = machine.describe(("numpy", "faiss-cpu", "scipy"))
    rows = []
    for n in args.sizes:
        t0 = time.perf_counter()
        x, planted, exact = planted_collection(n)
        print(
            f"n={n}: {len(planted)} planted groups ({sum(len(g) for g in planted)} photos) made in "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        for nprobe in args.nprobe if n <= 200_000 else args.nprobe_large:
            r = run_vectors(x, planted, args.threshold, nprobe)
            rows.append({"n": n, "what": "vectors", "nprobe": nprobe, **r})
            print(json.dumps(rows[-1]), flush=True)
        if n == args.all_pairs:
            r = run_vectors(x, planted, args.threshold, None, exact_max=n)
            rows.append({"n": n, "what": "all pairs (exact)", "nprobe": None, **r})
            print(json.dumps(rows[-1]), flush=True)
        if n in args.library_sizes:
            r = run_library(x, exact, planted, args.threshold, None)
            rows.append({"n": n, "what": "library", "nprobe": dup.DEFAULT_NPROBE, **r})
            print(json.dumps(rows[-1]), flush=True)
        del x
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "flock /tmp/pixquery-bench.lock python bench/duplicates.py " + " ".join(sys.argv[1:])
    runs = []
    if args.append and Path(f"{args.out}.json").exists():
        runs = json.loads(Path(f"{args.out}.json").read_text())["runs"]
    runs.append({"machine": desc, "note": args.note, "command": command, "threshold": args.threshold, "rows": rows})
    Path(f"{args.out}.json").write_text(json.dumps({"runs": runs}, indent=1))
    Path(f"{args.out}.md").write_text(markdown(runs))
    print(f"wrote {args.out}.md")


def markdown(runs: list[dict]) -> str:
    lines = [
        "# Duplicate finding: time and recall of planted groups",
        "",
        "Planted: 1% of the photos are sources of a group of 2-4 (30% of the copies exact, the rest at angular "
        "distance 0.02-0.075 from the source); the other groups found are mostly the synthetic generator's own "
        "bursts (near-copies of the previous photo). See the docstring of bench/duplicates.py.",
        "",
    ]
    # The all-pairs baseline: the exact range search measured at the smallest size, in any run.
    exact_rows = [r for run in runs for r in run["rows"] if r["what"].startswith("all pairs")]
    baseline = min(exact_rows, key=lambda r: r["n"]) if exact_rows else None
    for run in runs:
        lines += [
            machine.markdown(run["machine"]) + (" " + run["note"] if run["note"] else ""),
            "",
            f"Command: `{run['command']}`; threshold: angular distance {run['threshold']} "
            f"(cosine {dup.cosine_of(run['threshold']):.3f}).",
            "",
        ]
        lines += _table(run["rows"], baseline) + [""]
    lines += [
        "`CPU seconds`: time.process_time() of the run, all threads (faiss uses every core); on a shared "
        "machine it shows the work, where wall time shows the wait too.",
        "`seconds`: wall-clock time of the whole search (vectors in memory: the cells, the range search, the "
        "connected components; `library`: find_duplicates on a SQLite catalog, reading the embeddings "
        "and the group members' rows included; writing that catalog is not timed).",
        "`all pairs / this (CPU)`: the CPU time of the exact range search (IndexFlatIP: every pair) over this "
        "row's; at other sizes than the one measured it is extrapolated as n^2 (marked). "
        "`pairs found / all pairs'`: of every pair within the threshold (planted or not), the share found "
        "(where the exact search ran at the same size).",
    ]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict], baseline: dict | None) -> list[str]:
    out = [
        "| photos | what | method | seconds | CPU seconds | all pairs / this (CPU) | group recall | pair recall "
        "| pairs found / all pairs' | groups found | other groups |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = share = ""
        if baseline:
            est = baseline["cpu_s"] * (r["n"] / baseline["n"]) ** 2
            ratio = f"{est / r['cpu_s']:.1f}" + ("" if r["n"] == baseline["n"] else " (extrapolated)")
            if r["n"] == baseline["n"] and "pairs" in r:
                share = f"{r['pairs'] / baseline['pairs']:.4f}"
        out.append(
            f"| {r['n']:,} | {r['what']} | {r['method']} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | {ratio} | "
            f"{r['group_recall']:.4f} | {r['pair_recall']:.4f} | {share} | {r['groups']:,} | {r['other_groups']:,} |"
        )
    return out


if __name__ == "__main__":
    main()
