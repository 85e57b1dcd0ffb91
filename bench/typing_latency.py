"""Search as you type: what each keystroke's query costs a real `pixquery serve` (issue 18).

    python bench/typing_latency.py --model PATH/random-vit-b-32          # the run written to bench/results/typing.*
    python bench/typing_latency.py --model models/tiny-vit-b-32 --photos 40 --no-write

The library: the 1,000 ImageNet sample photos (../shared/data/imagenet-sample-images, linked, never
copied) indexed with the given model, built once and kept outside the repository
(`--library-cache`, default ~/.cache/pixquery-bench/typing-MODEL-FINGERPRINT-N; it is rebuilt when
its photo count or model fingerprint does not match).

The typist: `--sentences` queries are typed a character at a time. Every prefix is sent as its
own query (the worst case: the page's debounce sends fewer), stripped as the server strips it,
and only the first time it occurs: each query is new to the server, so both query caches (the
server's and the encoder's) miss and every answer includes one run of the text tower. The server
is fresh (one warm-up query that is not among the prefixes). One keep-alive connection, one
request at a time, a keystroke every `--interval` ms (the next request goes when the previous
answer is in and the interval has passed), k=30 (the page's first page).

Reported, p50 / p90 / p99 / max over all prefixes:
  server    `took_ms` from the answer: Server.search (parse, text tower, index, catalog, rows)
  handler   the `Server-Timing: app;dur=` header: the whole request inside the server (routing,
            validation, search, JSON), what the page waits for minus the loopback round trip
  client    the round trip as the client sees it (loopback HTTP/1.1, a minimal client)
and the server's CPU ms per query (from /proc), the load average before and after, and each
figure split by query length in tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/serve_load.py, bench/machine.py

from serve_load import ROOT, Server, _Connection, code_version, machine  # noqa: E402

SENTENCES = [
    "a dog playing on the beach at sunset",
    "red sports car parked in the rain",
    "two children building a snowman",
    "a bowl of ramen with chopsticks",
    "an old lighthouse on a rocky coast",
    "hot air balloons over the mountains",
    "a cat sleeping next to a window",
    "fresh vegetables at a market stall",
    "a musician playing guitar on stage",
    "foggy forest path in autumn",
]


def prefixes(sentences: list[str]) -> list[str]:
    """Every keystroke's query, stripped as the server strips it, each one once (first occurrence)."""
    seen: set[str] = set()
    out = []
    for s in sentences:
        for i in range(1, len(s) + 1):
            q = s[:i].strip()
            if q and q not in seen:
                seen.add(q)
                out.append(q)
    return out


def library(model: str, photos: int, source: Path, cache: Path | None) -> Path:
    """The cached library of `photos` photos from `source` indexed with `model` (built when missing)."""
    from pixquery.api import Library
    from pixquery.encoders.onnx import OnnxClipEncoder

    fingerprint = OnnxClipEncoder(model).fingerprint
    root = (
        cache
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "pixquery-bench"
        / f"typing-{Path(model).name}-{fingerprint}-{photos}"
    )
    lib_path = root / "library"
    if (lib_path / "catalog.sqlite").exists():
        with Library.open(lib_path, model=model, create=False) as lib:
            info = lib.info()
        if info["images"] == photos and info.get("fingerprint", fingerprint) == fingerprint:
            return lib_path
        print(f"{lib_path}: {info['images']} images, rebuilding", file=sys.stderr)
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:photos]
    if len(files) < photos:
        raise SystemExit(f"{source} has {len(files)} photos, fewer than --photos {photos}")
    pics = root / "photos"
    pics.mkdir(parents=True, exist_ok=True)
    for p in files:
        link = pics / p.name
        if not link.is_symlink():
            os.symlink(p.resolve(), link)
    t0 = time.perf_counter()
    with Library.open(lib_path, model=model) as lib:
        report = lib.index([str(pics)])
    print(
        f"indexed {report.indexed} photos with {model} in {time.perf_counter() - t0:.0f}s -> {lib_path}",
        file=sys.stderr,
    )
    return lib_path


def tokens(model: str, texts: list[str]) -> list[int]:
    """Each query's length in tokens, start and end included (what the short-context tower runs)."""
    from pixquery.encoders.onnx import OnnxClipEncoder

    ids = OnnxClipEncoder(model).tokenize(texts)
    return [int(row.argmax()) + 1 for row in ids]


async def _type(url: str, headers: dict, queries: list[str], k: int, interval: float, expect: int) -> list[dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = _Connection(host, int(port), headers)
    conn.want_headers = True
    rows = []
    try:
        next_at = time.perf_counter()
        for q in queries:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at = time.perf_counter() + interval
            t0 = time.perf_counter()
            status, body, head = await _get(conn, "/api/search?" + urlencode({"q": q, "k": k}))
            rtt = (time.perf_counter() - t0) * 1000
            if status != 200:
                raise SystemExit(f"{q!r}: {status} {body[:200]!r}")
            page = json.loads(body)
            if len(page["results"]) != expect or page["query"]["text"] != q:
                raise SystemExit(f"{q!r}: {len(page['results'])} results for {page['query']!r}")
            rows.append({"q": q, "client_ms": rtt, "server_ms": page["took_ms"], "handler_ms": _server_timing(head)})
    finally:
        await conn.close()
    return rows


async def _get(conn: _Connection, target: str) -> tuple[int, bytes, str]:
    """_Connection.get, also returning the response head (for Server-Timing)."""
    if conn.writer is None:
        conn.reader, conn.writer = await asyncio.open_connection(conn.host, conn.port)
    conn.writer.write(f"GET {target} HTTP/1.1\r\nHost: {conn.host}:{conn.port}\r\n{conn.extra}\r\n".encode())
    await conn.writer.drain()
    head = (await conn.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = next(
        int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.lower().startswith("content-length:")
    )
    body = await conn.reader.readexactly(length)
    return int(head.split()[1]), body, head


def _server_timing(head: str) -> float | None:
    for line in head.split("\r\n"):
        if line.lower().startswith("server-timing:"):
            for part in line.split(":", 1)[1].split(","):
                name, _, params = part.strip().partition(";")
                if name == "app" and "dur=" in params:
                    return float(params.split("dur=")[1].split(";")[0])
    return None


def debounce_table(
    rtts: list[float],
    sentences: list[str],
    delays=(0, 100, 150, 200, 300),
    wpms=(40, 60, 80),
    jitter: float = 0.45,
    seed: int = 0,
    reps: int = 50,
) -> list[dict]:
    """What a debounce delay does to a typist (a model, stated): a key every 60000 / (5 * wpm) ms at
    the median, each interval log-normal around it (sigma `jitter`); a request goes when the box has
    been still for `delay` ms after a key, and on the last key after `delay`; its answer takes a
    round trip drawn from the measured ones; each sentence typed `reps` times. Per delay and speed: requests per keystroke (server
    work), answers that came too late to be shown (aborted / dropped: work wasted), and the time
    from the last keystroke to the final results (what the typist waits once they stop)."""
    import random

    rng = random.Random(seed)
    out = []
    for wpm in wpms:
        median = 60000 / (5 * wpm)
        for delay in delays:
            keys = requests = late = 0
            waits = []
            for s in sentences * reps:
                t, events = 0.0, []
                for _ in s:
                    t += median * rng.lognormvariate(0, jitter)
                    events.append(t)
                keys += len(events)
                sends = [k + delay for k, nxt in zip(events, events[1:] + [float("inf")]) if nxt - k >= delay]
                answers = [x + rng.choice(rtts) for x in sends]
                requests += len(sends)
                late += sum(1 for a, nxt in zip(answers, sends[1:]) if a > nxt)  # a newer search had started
                waits.append(answers[-1] - events[-1])
            out.append(
                {
                    "wpm": wpm,
                    "key_ms": round(median),
                    "delay_ms": delay,
                    "requests_per_key": round(requests / keys, 2),
                    "superseded_per_sentence": round(late / len(sentences) / reps, 2),
                    "wait_after_last_key_ms": round(statistics.median(waits)),
                }
            )
    return out


def pct(values: list[float], p: float) -> float:
    v = sorted(x for x in values if x is not None)
    if not v:
        return float("nan")
    return round(v[min(len(v) - 1, max(0, round(p / 100 * len(v) + 0.5) - 1))], 2)


def summary(values: list[float]) -> dict:
    v = [x for x in values if x is not None]
    return {
        "n": len(v),
        "p50": pct(v, 50),
        "p90": pct(v, 90),
        "p99": pct(v, 99),
        "max": round(max(v), 2) if v else None,
        "mean": round(statistics.fmean(v), 2) if v else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model",
        default=str(ROOT / "models" / "random-vit-b-32"),
        help="model folder (default: the full-size random-weight ViT-B/32: real compute, meaningless ranks)",
    )
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--photo-source", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-sample-images")
    ap.add_argument("--library-cache", type=Path, default=None, help="folder that keeps the built library between runs")
    ap.add_argument(
        "--sentences", type=int, default=len(SENTENCES), help=f"how many of the {len(SENTENCES)} sentences to type"
    )
    ap.add_argument("--interval", type=float, default=150, help="ms between keystrokes (a request per keystroke)")
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat with a fresh server each time (the same prefixes, again new to that server)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "typing.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    code_start = code_version()
    lib_path = library(args.model, args.photos, args.photo_source, args.library_cache)
    queries = prefixes(SENTENCES[: args.sentences])
    n_tokens = dict(zip(queries, tokens(args.model, queries)))
    runs = []
    for r in range(args.rounds):
        load0 = os.getloadavg()
        log = lib_path.parent / f"server-typing-{r}.log"
        server = Server(lib_path, args.model, 1, log)
        try:
            asyncio.run(_type(server.url, server.headers, ["warm up the server"], args.k, 0, min(args.k, args.photos)))
            cpu0 = server.cpu_seconds()
            rows = asyncio.run(
                _type(server.url, server.headers, queries, args.k, args.interval / 1000, min(args.k, args.photos))
            )
            cpu = (server.cpu_seconds() - cpu0) / len(rows) * 1000
        finally:
            server.stop()
        load1 = os.getloadavg()
        run = {
            "round": r + 1,
            "load_avg_start": [round(x, 2) for x in load0],
            "load_avg_end": [round(x, 2) for x in load1],
            "server_cpu_ms_per_query": round(cpu, 2),
        }
        for key in ("server_ms", "handler_ms", "client_ms"):
            run[key] = summary([x[key] for x in rows])
        run["by_tokens"] = {}
        for lo, hi in ((1, 4), (5, 8), (9, 12)):
            sel = [x for x in rows if lo <= n_tokens[x["q"]] <= hi]
            if sel:
                run["by_tokens"][f"{lo}-{hi}"] = {
                    "n": len(sel),
                    "server_p50": pct([x["server_ms"] for x in sel], 50),
                    "client_p50": pct([x["client_ms"] for x in sel], 50),
                }
        run["rows"] = [
            [x["q"], n_tokens[x["q"]], x["server_ms"], x["handler_ms"], round(x["client_ms"], 2)] for x in rows
        ]
        runs.append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "rows"}), file=sys.stderr, flush=True)
    code_end = code_version()
    debounce = debounce_table([x[4] for run in runs for x in run["rows"]], SENTENCES[: args.sentences])
    report = {
        "machine": machine(),
        "code": code_start if code_end == code_start else f"{code_start} at the start, {code_end} at the end",
        "model": Path(args.model).name,
        "photos": args.photos,
        "photo_source": str(args.photo_source),
        "k": args.k,
        "interval_ms": args.interval,
        "queries": len(queries),
        "row_fields": ["query", "tokens", "server_ms", "handler_ms", "client_ms"],
        "sentences": SENTENCES[: args.sentences],
        "target_ms_p50": 50,
        "runs": runs,
        "debounce": debounce,
        "command": "python bench/typing_latency.py "
        + " ".join(a if not a.startswith(str(Path.home())) else "~" + a[len(str(Path.home())) :] for a in sys.argv[1:]),
    }
    print(markdown(report))
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(dumps(report))
        args.out.write_text(markdown(report))
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}", file=sys.stderr)


def dumps(report: dict) -> str:
    """JSON, indented, with one line per measured query."""
    runs = [dict(run, rows=f"@rows{i}@") for i, run in enumerate(report["runs"])]
    text = json.dumps(dict(report, runs=runs), indent=1, ensure_ascii=False)
    for i, run in enumerate(report["runs"]):
        rows = "[\n   " + ",\n   ".join(json.dumps(row, ensure_ascii=False) for row in run["rows"]) + "\n  ]"
        text = text.replace(f'"@rows{i}@"', rows)
    return text + "\n"


def markdown(r: dict) -> str:
    m = r["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        "# Search as you type: each keystroke's query, answered by `pixquery serve`",
        "",
        f"Command: `{r['command'].strip()}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, {m['os']}; {vers}. "
        f"Run {m['date']}, code {r['code']}. Client and server share the cores (and the machine is shared with other work: "
        "see the load averages).",
        "",
        f"Library: {r['photos']} photos ({r['photo_source']}), model `{r['model']}`, k={r['k']}. "
        f"{len(r['sentences'])} sentences typed a character at a time: {r['queries']} distinct prefixes, each sent once "
        f"(new to the server: no query-cache hit), one request at a time, a keystroke every {r['interval_ms']:.0f} ms.",
        "",
        "| round | load avg (1, 5, 15 min) start -> end | what | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | mean (ms) |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "server_ms": "server: search (took_ms)",
        "handler_ms": "server: whole request (Server-Timing)",
        "client_ms": "client round trip",
    }
    for x in r["runs"]:
        load = f"{', '.join(map(str, x['load_avg_start']))} -> {', '.join(map(str, x['load_avg_end']))}"
        for key, name in names.items():
            s = x[key]
            lines.append(
                f"| {x['round']} | {load} | {name} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} | {s['mean']} |"
            )
            load = ""
    lines += [
        "",
        "Server CPU per query (ms), by round: " + ", ".join(str(x["server_cpu_ms_per_query"]) for x in r["runs"]) + ".",
        "",
        "By query length (tokens, start and end included; the text tower runs at the query's own length), p50 ms:",
        "",
        "| round | tokens | queries | server | client |",
        "|---:|---|---:|---:|---:|",
    ]
    for x in r["runs"]:
        for b, s in x["by_tokens"].items():
            lines.append(f"| {x['round']} | {b} | {s['n']} | {s['server_p50']} | {s['client_p50']} |")
    lines += [
        "",
        "The page's debounce, modelled with these round trips (debounce_table: a key every 60000 / (5 x wpm) ms at the median, "
        "log-normal intervals; a request once the box is still for the delay). Requests per keystroke is the server's work; "
        "superseded: answers that came after a newer search had started (aborted by the page); wait: median time from the "
        "last keystroke to the final results.",
        "",
        "| typist | delay (ms) | requests / keystroke | superseded / sentence | wait after last key (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for d in r.get("debounce", []):
        lines.append(
            f"| {d['wpm']} wpm ({d['key_ms']} ms/key) | {d['delay_ms']} | {d['requests_per_key']} | "
            f"{d['superseded_per_sentence']} | {d['wait_after_last_key_ms']} |"
        )
    best = min(x["client_ms"]["p50"] for x in r["runs"])
    worst = max(x["client_ms"]["p50"] for x in r["runs"])
    lines += [
        "",
        f"Target: each keystroke's query answered in <= {r['target_ms_p50']} ms p50. Client round trip p50 "
        f"{best} to {worst} ms over the rounds: {'met' if worst <= r['target_ms_p50'] else 'NOT met'}.",
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rewrite-markdown"]:
        out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "bench" / "results" / "typing.md"
        out.write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
    else:
        main()
