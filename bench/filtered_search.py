"""Filtered search at 1M vectors: prefilter (faiss IDSelector) vs postfilter (search wider), side by side.

    python bench/filtered_search.py                      # 1M synthetic CLIP-like vectors, flat + ivf
    python bench/filtered_search.py --n 200000 --queries 20 --kinds flat

For each index kind, each selectivity (0.1%, 1%, 10%, 50% of the vectors allowed) and each shape
of allowed set, both strategies of pixquery.indexes.filtered.FilteredIndex answer the same text
queries (real CLIP ViT-B/32 text vectors where ../shared is present, bench/synthetic.py): one
query at a time (as the search page sends them), latency p50 / p95 and recall@10 against the exact
top 10 among the allowed vectors. Shapes: `random` (any 1 in 1/s: a camera, a folder spread over
years) and `range` (a contiguous run of the collection, which bench/synthetic.py lays out as
consecutive scenes: a date range). Writes bench/results/filtered-search.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
import synthetic  # noqa: E402

from pixquery import indexes  # noqa: E402
from pixquery.indexes.filtered import PREFILTER_BELOW, FilteredIndex, allowed_mask  # noqa: E402

SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)
STRATEGIES = ("prefilter", "postfilter", "auto")
K = 10


def allowed_rows(n: int, s: float, shape: str, rng) -> np.ndarray:
    m = max(K, int(round(n * s)))
    if shape == "range":
        start = int(rng.integers(0, n - m + 1))
        return np.arange(start, start + m, dtype=np.int64)
    return np.sort(rng.choice(n, size=m, replace=False)).astype(np.int64)


def exact_top(x: np.ndarray, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    scores = q @ x[rows].T
    top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return rows[top]


def run(args) -> dict:
    t0 = time.perf_counter()
    x = synthetic.images(args.n, seed=0)
    q = synthetic.text_queries(1000)[:: max(1, 1000 // args.queries)][: args.queries].astype(np.float32)
    print(f"{args.n} vectors, {len(q)} queries in {time.perf_counter() - t0:.1f}s", flush=True)
    ids = np.arange(args.n, dtype=np.int64)
    rng = np.random.default_rng(0)
    out = {"n": args.n, "queries": len(q), "k": K, "rows": []}
    for kind in args.kinds:
        params = json.loads(args.params.get(kind, "{}")) if isinstance(args.params, dict) else {}
        t = time.perf_counter()
        index = indexes.build_index(kind, x.shape[1], ids, x, **params)
        build = time.perf_counter() - t
        print(f"{kind} {index.params()} built in {build:.1f}s", flush=True)
        for shape in args.shapes:
            for s in SELECTIVITIES:
                rows = allowed_rows(args.n, s, shape, rng)
                t = time.perf_counter()
                mask = allowed_mask(rows, args.n)
                mask_ms = (time.perf_counter() - t) * 1000
                truth = exact_top(x, rows, q)
                for strategy in args.strategies:
                    view = FilteredIndex(
                        index, mask, strategy=strategy
                    )  # no exact fallback: measure the strategy itself
                    view.search(q[:1], K)  # warm
                    times, found, used = [], [], set()
                    for qi in q:
                        t = time.perf_counter()
                        _, f = view.search(qi[None], K)
                        times.append((time.perf_counter() - t) * 1000)
                        found.append(f[0])
                        used.add(view.used)
                    found = np.array(found)
                    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found.tolist(), truth.tolist())]))
                    short = float(np.mean((found < 0).sum(axis=1)))
                    row = {
                        "kind": kind,
                        "shape": shape,
                        "selectivity": s,
                        "allowed": int(len(rows)),
                        "strategy": strategy,
                        "p50_ms": float(np.percentile(times, 50)),
                        "p95_ms": float(np.percentile(times, 95)),
                        "recall_at_10": recall,
                        "missing_per_query": short,
                        "mask_ms": mask_ms,
                        "used": sorted(used),
                    }
                    out["rows"].append(row)
                    print(
                        f"  {kind:5s} {shape:6s} s={s:<6g} {strategy:10s} p50 {row['p50_ms']:8.2f} ms  "
                        f"p95 {row['p95_ms']:8.2f} ms  recall@10 {recall:.3f}  missing {short:.2f}  {','.join(sorted(used))}",
                        flush=True,
                    )
        del index
    return out


def catalog_filter(n: int) -> list[dict]:
    """The catalog's part: a library of n photos (a 4-d model: the vectors do not matter here) with
    dates spread over ten years, in a temporary folder; how long `Catalog.filter_refs` takes for a
    date range keeping each selectivity, and for folders holding that share of the photos (a tree
    /photos/D1/D2/D3/: each D3 folder 0.1% of the library, each D2 1%, each D1 10%)."""
    import tempfile
    from datetime import datetime, timedelta

    from pixquery.catalog import Catalog
    from pixquery.filters import Filter
    from pixquery.ingest.metadata import wall_seconds

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cat = Catalog(Path(tmp) / "catalog.sqlite")
        start = datetime(2015, 1, 1)
        span = 10 * 365 * 86400
        t = time.perf_counter()
        with cat.transaction():
            model = cat.ensure_model("bench", "bench", 4)
            paths = [f"/photos/{i * 10 // n}/{i * 100 // n}/{i * 1000 // n}/{i:07d}.jpg" for i in range(n)]
            ids = cat.add_photos(model.id, [(p, 1, 1, None, 4, 3) for p in paths], np.zeros((n, 4), np.float32))
            for i, image_id in enumerate(ids):
                cat.put_meta({"taken": wall_seconds(start) + span * i / n, "taken_source": "exif"}, image_id=image_id)
        index = cat.create_index(model.id, "flat", {})
        cat.commit_index(
            index.id,
            path="x",
            added=[(i, (image_id, None)) for i, image_id in enumerate(ids)],
            removed_refs=[],
            clear=True,
            params={},
            size_bytes=0,
            build_seconds=0,
            next_ref_id=n,
        )
        print(f"catalog of {n} photos made in {time.perf_counter() - t:.0f}s", flush=True)
        for s in SELECTIVITIES:
            lo = start + timedelta(seconds=span * 0.25)
            dates = Filter(after=lo, before=lo + timedelta(seconds=span * s))
            levels = {
                0.001: ["/photos/2/25/250"],
                0.01: ["/photos/2/25"],
                0.1: ["/photos/2"],
                0.5: [f"/photos/{d}" for d in range(5)],
            }
            folders = Filter(folders=tuple(levels[s]))
            for what, flt in (("date range", dates), ("folders", folders)):
                times, found = [], 0
                for _ in range(3):
                    t = time.perf_counter()
                    found = len(cat.filter_refs(index.id, flt))
                    times.append((time.perf_counter() - t) * 1000)
                rows.append({"filter": what, "selectivity": s, "passed": found, "ms": float(np.median(times))})
                print(f"  catalog {what:10s} s={s:<6g} {found:8d} pass  {rows[-1]['ms']:8.1f} ms", flush=True)
        cat.close()
    return rows


def markdown(res: dict, desc: dict, command: str) -> str:
    lines = [
        f"# Filtered search: prefilter vs postfilter at {res['n']:,} vectors",
        "",
        f"Command: `{command}`",
        "",
        f"{res['queries']} real CLIP ViT-B/32 text queries (bench/synthetic.py), one at a time, k={res['k']}. "
        "recall@10 against the exact top 10 among the allowed vectors. `prefilter`: faiss IDSelectorBitmap "
        "(IVF: nprobe / selectivity cells); `postfilter`: search k / selectivity wider, 4x more until 10 pass. "
        "Neither with the exact fallback pixquery adds when an index returns too few.",
        "",
    ]
    rows = res["rows"]
    present = [st for st in STRATEGIES if any(r["strategy"] == st for r in rows)]
    head = (
        ["index", "allowed set", "selectivity"]
        + [f"{st} p50 ms" for st in present]
        + [f"{st} recall@10" for st in present]
        + [f"{st} p95 ms" for st in present]
    )
    if "auto" in present:
        head.append("auto used")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(r["kind"], r["shape"], r["selectivity"]) for r in rows}, key=lambda t: (t[0], t[1], t[2]))
    for kind, shape, sel in keys:
        by = {r["strategy"]: r for r in rows if (r["kind"], r["shape"], r["selectivity"]) == (kind, shape, sel)}
        cells = [kind, shape, f"{sel:.1%}"]
        cells += [f"{by[st]['p50_ms']:.2f}" if st in by else "" for st in present]
        cells += [f"{by[st]['recall_at_10']:.3f}" if st in by else "" for st in present]
        cells += [f"{by[st]['p95_ms']:.2f}" if st in by else "" for st in present]
        if "auto" in present:
            cells.append(", ".join(by["auto"].get("used", [])) if "auto" in by else "")
        lines.append("| " + " | ".join(cells) + " |")
    if res.get("catalog"):
        lines += [
            "",
            f"## The catalog's part: which ids pass ({res['catalog_n']:,} photos)",
            "",
            "`Catalog.filter_refs` (one SQL query over index_image, image and media_meta) before every filtered "
            "search; median of 3.",
            "",
            "| filter | selectivity | ids passing | ms |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['filter']} | {r['selectivity']:.1%} | {r['passed']:,} | {r['ms']:.1f} |" for r in res["catalog"]
        ]
    lines += [
        "",
        f"`auto` (what pixquery runs, indexes/filtered.py): the prefilter below selectivity {PREFILTER_BELOW}; "
        "above it one postfilter search (k / selectivity x 1.2 + 16 hits), then the prefilter when fewer "
        "than k of those pass; the postfilter alone where the index has no prefilter (annoy, hnswlib, Milvus).",
        "",
        "## Machine",
        "",
        machine.markdown(desc) + (f" {desc['note']}" if desc.get("note") else ""),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--kinds", default="flat,ivf")
    ap.add_argument("--shapes", default="random,range")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "filtered-search"))
    ap.add_argument(
        "--catalog-n", type=int, default=0, help="also time the catalog's filter query on a library of this many photos"
    )
    ap.add_argument("--note", default="", help="a line about the machine (e.g. shared with other work)")
    args = ap.parse_args()
    args.kinds = args.kinds.split(",")
    args.shapes = args.shapes.split(",")
    args.strategies = args.strategies.split(",")
    args.params = {}
    res = run(args) if args.kinds != [""] else {"n": args.n, "queries": 0, "k": K, "rows": []}
    if args.catalog_n:
        res["catalog_n"], res["catalog"] = args.catalog_n, catalog_filter(args.catalog_n)
    desc = machine.describe()
    if args.note:
        desc["note"] = args.note
    res["machine"] = desc
    command = "python bench/filtered_search.py " + " ".join(sys.argv[1:])
    Path(args.out + ".json").write_text(json.dumps(res, indent=1))
    Path(args.out + ".md").write_text(markdown(res, desc, command))
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
