"""Text-query latency of the warm encoder: tokenisation + text tower, one query at a time.

    flock /tmp/pixquery-bench.lock python bench/query_latency.py --model models/random-vit-b-32

Each configuration (precision x text-tower threads x length) gets its own encoder, warmed up
(session made, one query run); then the configurations answer distinct queries in turn
(interleaved, so load falls on all alike) and the p50/p90 of `encode_texts([q])` is reported, plus
a repeated query (answered from the cache of recent query embeddings). "query length": the text
tower runs only up to the query's end-of-text token (the checked short-context copy of the tower,
same embeddings, the default); "full context": all 77 positions, as exported.
The speed issue's target: p50 <= 40 ms fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingest import load_avg  # noqa: E402
from machine import describe, markdown  # noqa: E402
from query_words import WORDS  # noqa: E402

from pixquery.encoders.onnx import OnnxClipEncoder  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ingest_query_latency")
    args = ap.parse_args()
    configs = {}
    for p in args.precisions.split(","):
        threads = [int(x) for x in args.threads.split(",")]
        for t, short in [(t, True) for t in threads] + [(max(threads), False)]:
            enc = OnnxClipEncoder(args.model, precision=p, text_threads=t, short_context=short)
            enc.warm_up(("textual",))
            configs[
                f"{p}, {t} thread{'s' if t > 1 else ''}, {'query length' if short else 'full 77-token context'}"
            ] = enc
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {k: [] for k in configs}
    hits: dict[str, list[float]] = {k: [] for k in configs}
    load_before = load_avg()
    for i in range(args.queries):
        for k, enc in configs.items():
            q = f"a photo of a {' '.join(rng.choice(WORDS, 3))} number {i}"
            t0 = time.perf_counter()
            enc.encode_texts([q])
            times[k].append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            enc.encode_texts([q])
            hits[k].append((time.perf_counter() - t0) * 1e3)
    load_after = load_avg()
    rows = [
        {
            "config": k,
            "p50_ms": float(np.median(v)),
            "p90_ms": float(np.percentile(v, 90)),
            "cached_p50_ms": float(np.median(hits[k])),
        }
        for k, v in times.items()
    ]
    machine = describe()
    lines = [
        "# Text-query latency (warm encoder, tokenisation included)",
        "",
        f"Command: `flock /tmp/pixquery-bench.lock python bench/query_latency.py --model {args.model} --queries {args.queries}`",
        "",
        markdown(machine),
        f"Load average before: {load_before}; after: {load_after}.",
        "",
        "| precision, text threads, length | p50 (ms) | p90 (ms) | repeated query, from the cache: p50 (ms) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['config']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {r['cached_p50_ms']:.3f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "rows": rows, "load_before": load_before, "load_after": load_after}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
