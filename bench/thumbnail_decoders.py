"""Thumbnails made in the server's process vs in its decode worker processes (pixquery.server.decoder).

The workers keep a crashing codec from taking the server down; this measures what that costs:
cold thumbnails (an empty cache each round) of the same photos, one request at a time and from
two threads (the server's default thumbnail concurrency), each photo opened as the server does
(files.open_checked) and handed to the workers through its descriptor.

    python bench/thumbnail_decoders.py [--photos FOLDER] [--n 200] [--rounds 3] [--out bench/results/thumbnail-decoders.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402


def photos_in(folder: Path | None, n: int, tmp: Path) -> list[Path]:
    if folder is not None and folder.is_dir():
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
        if found:
            return found
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from photos import make_photos

    return make_photos(tmp / "photos", n, size=(1600, 1200))


def run_round(paths: list[Path], thumbs_root: Path, workers, threads: int) -> float:
    from pixquery.server.decoder import shared_path
    from pixquery.server.thumbnails import Thumbnails

    thumbs = Thumbnails(thumbs_root, concurrency=threads, workers=workers)

    def one(i_path):
        i, path = i_path
        with open(path, "rb") as f:
            source = shared_path(f.fileno(), str(path)) if workers is not None else f
            thumbs.get(i, source, os.fstat(f.fileno()), 256, name=path.name)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, enumerate(paths)))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--photos",
        type=Path,
        default=Path(__file__).resolve().parent.parent.parent / "shared/data/imagenet-sample-images",
    )
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from pixquery.server.decoder import DecodeWorkers

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = photos_in(args.photos, args.n, tmp)
        workers = DecodeWorkers(2)
        t0 = time.perf_counter()
        workers.warm()
        start_s = time.perf_counter() - t0
        rows = []
        for threads in (1, 2):
            times = {"in-process": [], "workers": []}
            for r in range(args.rounds):
                for name, w in (("in-process", None), ("workers", workers)):
                    times[name].append(run_round(paths, tmp / f"thumbs-{name}-{threads}-{r}", w, threads))
            a, b = statistics.median(times["in-process"]), statistics.median(times["workers"])
            rows.append((threads, len(paths) / a, len(paths) / b, b / a))
        workers.close()
        source = "synthetic 1600x1200" if str(paths[0]).startswith(str(tmp)) else str(args.photos)

    m = describe(("pillow", "numpy"))
    lines = [
        "# Thumbnails: in the server's process vs in decode worker processes",
        "",
        f"{len(paths)} photos ({source}), 256 px JPEG thumbnails, "
        f"cold cache, median of {args.rounds} rounds. Starting the 2 workers (forkserver, imports): {start_s:.2f} s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, {m['date']}; "
        f"shared with other engineers' work: load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after "
        "(on 2 cores: the figures are noisy; run it on an idle machine for a ratio to trust).",
        "",
        "| request threads | in-process thumbnails/s | worker thumbnails/s | time ratio workers / in-process |",
        "|---|---|---|---|",
        *[f"| {t} | {a:.1f} | {b:.1f} | {r:.2f} |" for t, a, b, r in rows],
        "",
        "Command: `python bench/thumbnail_decoders.py " + " ".join(sys.argv[1:]) + "`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
