"""Load test of `pixquery serve` on loopback: concurrent clients sending text queries.

    python bench/serve_load.py                                  # the full run written to bench/results/
    python bench/serve_load.py --model models/tiny-vit-b-32 --photos 24 --queries 200 --no-write

For each server setting (`--configs POOL:TEXT_BATCH`: `pixquery serve --pool P --text-batch B`) and each query mix, a fresh
server is started (a subprocess, exactly as `pixquery serve` runs, with a token), warmed with one
query, then `--clients` concurrent clients (asyncio, one keep-alive HTTP/1.1 connection each) send
`--queries` GET /api/search?q=...&k=30 requests between them. Every answer is checked: status 200,
JSON, 30 results (or all photos when fewer). Reported: errors, wall time, queries/s, latency
percentiles as the client sees them, and the server's CPU seconds per query (from /proc).

Query mixes:
  unique    every query a different sentence: each one runs the text tower (no cache hits)
  repeated  the queries drawn from 50 sentences: after the first few, answered from the
            encoder's query cache (what paging and re-asked queries cost: HTTP + index + catalog)

Every run is bounded: `--time-limit` seconds per run and a fixed number of queries; a run that
does not finish in time counts its unsent queries as errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/machine.py

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-" + os.urandom(8).hex()

SUBJECTS = [
    "a dog",
    "a cat",
    "a red sports car",
    "a bicycle",
    "a sailing boat",
    "a lighthouse",
    "an old man",
    "two children",
    "a bowl of soup",
    "a birthday cake",
    "a mountain lake",
    "a city street",
    "a wooden bridge",
    "a horse",
    "a parrot",
    "a tractor",
    "a guitar",
    "a snowman",
    "a castle",
    "a waterfall",
    "a train",
    "a teddy bear",
    "a plate of pasta",
    "a sunflower",
    "a fishing net",
    "a tent",
    "a hot air balloon",
    "a church",
    "a desk",
    "a kite",
]
PLACES = [
    "on a beach",
    "in the snow",
    "at night",
    "in the rain",
    "in a forest",
    "in a kitchen",
    "at sunset",
    "in a garden",
    "on a table",
    "in the desert",
    "by the sea",
    "in a park",
    "on a street",
    "in fog",
    "indoors",
    "from above",
    "in autumn",
    "under a bridge",
    "next to a window",
    "in a field",
]
STYLES = ["", "a photo of ", "a blurry photo of ", "a close-up of ", "a black and white photo of "]


def sentences(n: int, seed: int) -> list[str]:
    """n different, realistic queries."""
    rng = random.Random(seed)
    combos = [(s, p, st) for s in SUBJECTS for p in PLACES for st in STYLES]
    rng.shuffle(combos)
    out = [f"{st}{s} {p}".strip() for s, p, st in combos[:n]]
    while len(out) < n:  # more than the combinations: add a number
        out.append(f"{out[len(out) % len(combos)]} number {len(out)}")
    return out


def query_mix(kind: str, n: int, seed: int = 0) -> list[str]:
    if kind == "unique":
        return sentences(n, seed)
    if kind == "repeated":
        base = sentences(50, seed + 1)
        rng = random.Random(seed)
        return [rng.choice(base) for _ in range(n)]
    raise ValueError(kind)


# -- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, library: Path, model: str, pool: int, log_path: Path, text_batch: int = 1):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        env.pop("PIXQUERY_TOKEN", None)
        self.log = open(log_path, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pixquery.server",
                "--library",
                str(library),
                "--model",
                model,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--token",
                TOKEN,
                "--pool",
                str(pool),
                "--text-batch",
                str(text_batch),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text()}")
            try:
                if httpx.get(self.url + "/api/health", headers=self.headers, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {log_path.read_text()}")

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {TOKEN}"}

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- the clients --------------------------------------------------------------------------------


class _Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: far less client CPU per request than
    a full client library, so that on a small machine the numbers describe the server."""

    def __init__(self, host: str, port: int, headers: dict):
        self.host, self.port = host, port
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader = self.writer = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}\r\n".encode())
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if length is None:
            raise RuntimeError("no Content-Length in the answer")
        body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None


async def _run_clients(
    url: str,
    headers: dict,
    queries: list[str],
    clients: int,
    k: int,
    expect: int,
    time_limit: float,
    answers: dict | None = None,
) -> dict:
    from urllib.parse import urlencode

    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []
    todo = list(queries)
    todo.reverse()

    async def client() -> None:
        conn = _Connection(host, int(port), headers)
        try:
            while todo:
                q = todo.pop()
                t0 = time.perf_counter()
                try:
                    status, body = await conn.get("/api/search?" + urlencode({"q": q, "k": k}))
                    dt = time.perf_counter() - t0
                    if status != 200:
                        errors.append(f"{status}: {body[:200]!r}")
                        continue
                    results = json.loads(body)["results"]
                    if len(results) != expect:
                        errors.append(f"{len(results)} results instead of {expect} for {q!r}")
                        continue
                    if answers is not None:
                        paths = [r["path"] for r in results]
                        if answers.setdefault(q, paths) != paths:
                            errors.append(f"{q!r} answered differently under load: {paths[:3]} vs {answers[q][:3]}")
                            continue
                    latencies.append(dt)
                except Exception as e:  # noqa: BLE001 (every failure is a counted error)
                    errors.append(f"{type(e).__name__}: {e}")
                    await conn.close()
        finally:
            await conn.close()

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=time_limit)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - t0
    unsent = len(todo)
    if pending:
        errors.append(f"time limit of {time_limit}s reached: {unsent} queries not sent, {len(pending)} clients cut off")
    return {"latencies": latencies, "errors": errors, "wall": wall, "unsent": unsent}


def run_load(
    url: str,
    headers: dict,
    queries: list[str],
    clients: int = 20,
    k: int = 30,
    expect: int = 30,
    time_limit: float = 300.0,
    answers: dict | None = None,
) -> dict:
    """Send `queries` from `clients` concurrent clients; returns counts, q/s and latency percentiles (ms).
    answers: a dict to fill with query -> the paths answered, in order; a query answered differently
    by two requests under load counts as an error."""
    raw = asyncio.run(_run_clients(url, headers, queries, clients, k, expect, time_limit, answers))
    lat = sorted(raw["latencies"])

    def pct(p: float) -> float:
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, max(0, round(p / 100 * len(lat) + 0.5) - 1))] * 1000

    return {
        "queries": len(queries),
        "ok": len(lat),
        "errors": len(queries) - len(lat),
        "error_samples": raw["errors"][:5],
        "clients": clients,
        "wall_s": round(raw["wall"], 3),
        "qps": round(len(lat) / raw["wall"], 1) if raw["wall"] else 0.0,
        "p50_ms": round(pct(50), 2),
        "p90_ms": round(pct(90), 2),
        "p99_ms": round(pct(99), 2),
        "max_ms": round(lat[-1] * 1000, 2) if lat else float("nan"),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else float("nan"),
    }


# -- the library --------------------------------------------------------------------------------


def build_library(folder: Path, model: str, photos: int, source: Path | None) -> Path:
    from pixquery.api import Library

    pics = folder / "photos"
    pics.mkdir(parents=True, exist_ok=True)
    if source is not None:
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:photos]
        if not files:
            raise SystemExit(f"no photos in {source}")
        for p in files:
            os.symlink(p.resolve(), pics / p.name)
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from photos import make_photos

        make_photos(pics, photos)
    lib_path = folder / "library"
    with Library.open(lib_path, model=model) as lib:
        report = lib.index([str(pics)])
    print(f"indexed {report.indexed} photos with {model} in {report.seconds:.1f}s", file=sys.stderr)
    return lib_path


def code_version() -> str:
    """The commit, and the source files that differ from it (this tree is shared while it runs)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.split("\n")
        changed = [line[3:] for line in dirty if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


def machine() -> dict:
    from machine import describe  # bench/machine.py: one description for every benchmark

    desc = describe(("fastapi", "uvicorn", "starlette", "httpx", "onnxruntime", "numpy"))
    desc["ram_gib"] = desc.pop("memory_gib")
    return desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--library", type=Path, help="an existing library (default: build one in a temporary folder)")
    ap.add_argument(
        "--model",
        default=str(ROOT / "models" / "random-vit-b-32"),
        help="model (default: the full-size random-weight ViT-B/32: real compute, meaningless results)",
    )
    ap.add_argument("--photos", type=int, default=200, help="photos in the built library")
    ap.add_argument(
        "--photo-source",
        default=None,
        help="folder of real photos to index (default: ../shared/data/imagenet-sample-images if present; "
        "'synthetic' for generated ones)",
    )
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument(
        "--configs",
        default="1:1,1:16,4:16",
        help="server settings to compare, POOL:TEXT_BATCH (pixquery serve --pool P --text-batch B)",
    )
    ap.add_argument("--mixes", default="unique,repeated")
    ap.add_argument(
        "--single",
        type=int,
        default=200,
        help="also send this many unique queries from one client (one person typing), first setting only; 0: skip",
    )
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds per run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve-load.md")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    source = None if args.photo_source in (None, "synthetic") else Path(args.photo_source)
    if args.photo_source is None and args.library is None:
        shared = ROOT.parent / "shared" / "data" / "imagenet-sample-images"
        source = shared if shared.is_dir() else None
    code_start = code_version()
    with tempfile.TemporaryDirectory(prefix="pixquery-serve-load-") as tmp:
        lib_path = args.library or build_library(Path(tmp), args.model, args.photos, source)
        from pixquery.api import Library

        with Library.open(lib_path, model=args.model) as lib:
            info = lib.info()
        n_images = info["images"]
        index_kind = next((m["index"]["kind"] for m in info["models"] if m.get("index")), "none")
        if not n_images:
            raise SystemExit(f"the library at {lib_path} has no images")
        expect = min(args.k, n_images)
        rows = []
        runs = [
            (config, mix, args.clients, args.queries)
            for config in args.configs.split(",")
            for mix in args.mixes.split(",")
        ]
        if args.single:
            runs.insert(0, (args.configs.split(",")[0], "unique", 1, args.single))
        for config, mix, clients, n_queries in runs:
            pool, batch = (int(x) for x in config.split(":"))
            server = Server(
                lib_path, args.model, pool, Path(tmp) / f"server-{pool}-{batch}-{mix}.log", text_batch=batch
            )
            try:
                run_load(server.url, server.headers, ["warm up"], clients=1, k=args.k, expect=expect)
                cpu0, load0 = server.cpu_seconds(), os.getloadavg()[0]
                result = run_load(
                    server.url,
                    server.headers,
                    query_mix(mix, n_queries, seed=clients),
                    clients=clients,
                    k=args.k,
                    expect=expect,
                    time_limit=args.time_limit,
                )
                result["server_cpu_ms_per_query"] = round(
                    (server.cpu_seconds() - cpu0) / max(1, result["ok"]) * 1000, 2
                )
                result["load_avg"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
            finally:
                server.stop()
            result.update(pool=pool, text_batch=batch, mix=mix)
            rows.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
        code_end = code_version()
        code = code_start if code_end == code_start else f"{code_start} at the start, {code_end} at the end"
        report = {
            "machine": machine(),
            "code": code,
            "model": args.model,
            "images": n_images,
            "index_kind": index_kind,
            "k": args.k,
            "photo_source": str(source) if source else "synthetic (tests/photos.py)",
            "runs": rows,
            "command": "python bench/serve_load.py " + " ".join(sys.argv[1:]),
        }
    print(json.dumps(report, indent=2))
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.write_text(markdown(report))
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}", file=sys.stderr)


def markdown(r: dict) -> str:
    m = r["machine"]
    vers = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [
        "# `pixquery serve` under load (loopback)",
        "",
        f"Command: `{r['command'].strip()}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}, {m['os']}; {vers}. "
        f"Run {m['date']}, code {r.get('code', 'unknown')}. The clients (one asyncio process, a minimal HTTP/1.1 keep-alive client) share the cores with the server.",
        "",
        f"Library: {r['images']} photos ({r['photo_source']}), {r.get('index_kind', 'flat')} index; model `{Path(r['model']).name}`; "
        f"every query asks for k={r['k']} results (one page of the search page).",
        "",
        "| pool | text batch | query mix | clients | queries | errors | wall (s) | queries/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | server CPU ms/query | load avg (start, end) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['pool']} | {x['text_batch']} | {x['mix']} | {x['clients']} | {x['queries']} | {x['errors']} | {x['wall_s']} | "
            f"{x['qps']} | {x['p50_ms']} | {x['p90_ms']} | {x['p99_ms']} | {x['max_ms']} | {x['server_cpu_ms_per_query']} | "
            f"{x['load_avg'][0]}, {x['load_avg'][1]} |"
        )
    lines += [
        "",
        "- pool: `pixquery serve --pool N`, Library objects (SQLite connections + loaded index) serving requests; "
        "1 is a single lock. Text encoding runs outside the pool in every case.",
        "- text batch: `--text-batch B`, text queries waiting at the same moment encoded in one model call (1: one call each).",
        "- load avg: the machine's 1-minute load average when the run started and ended (other work shares these cores).",
        "- unique: every query a different sentence (every query runs the text tower). repeated: drawn from 50 sentences "
        "(answered from the encoder's query cache after the first time).",
        "",
        "How to read it: in the unique mix the server CPU per query is one run of the text tower plus a few ms for HTTP, "
        "index and catalog; the one-client row is what a person typing sees. With 20 clients the latency is mostly "
        "queueing (clients / queries per second). In the repeated mix the p99 and max are the first asks of the 50 "
        "sentences, queued behind each other at the start; the other queries are cache hits.",
        "",
    ]
    for x in r["runs"]:
        if x["error_samples"]:
            lines.append(f"Errors (pool {x['pool']}, {x['mix']}): " + "; ".join(x["error_samples"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rewrite-markdown"]:  # regenerate the .md from the .json of a run
        out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "bench" / "results" / "serve-load.md"
        out.write_text(markdown(json.loads(out.with_suffix(".json").read_text())))
    else:
        main()
