"""What `index --ocr` costs on photos without text: indexing speed with OCR against without.

    python bench/ocr_cost.py --folder /tmp/ocr-set/photos/plain --model models/random-vit-b-32 --rounds 2

After one warm-up run (not counted), each round indexes the folder into fresh libraries, one after another on the same photos (so the
load of a shared machine falls on all alike):
  - without OCR;
  - with OCR as pixquery runs it: text detection in the decode workers, on the pixels decoded for
    the embedding, beside the encoder; recognition only of photos where it found boxes;
  - the OCR design before it, for comparison: the embedding run, then an OCR pass over every photo
    in this process (second decode, detection, recognition of any boxes), `ocr.read_photos`.
Speed ratio = seconds without OCR / seconds with (the issue's target: >= 0.5, "must not halve").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, markdown  # noqa: E402

from pixquery.api import Library  # noqa: E402
from pixquery.ingest import ocr as ocr_mod  # noqa: E402
from pixquery.ingest.executors import local as local_executor  # noqa: E402
from pixquery.ingest.ocr import OcrConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folder", type=Path, required=True, help="photos without text")
    ap.add_argument("--model", default="models/random-vit-b-32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--det-side", type=int, default=OcrConfig().det_side)
    ap.add_argument("--contrast", default=OcrConfig().contrast)
    ap.add_argument("--engine", default=OcrConfig().engine, help="OCR engine (default: pixquery's)")
    ap.add_argument("--extend", type=float, default=OcrConfig().extend, help="box lengthening (default: pixquery's)")
    ap.add_argument(
        "--nice",
        type=int,
        default=None,
        help="the decode workers' niceness above the encoder's when they read text (default pixquery's "
        "OCR_NICE, 0); on a machine "
        "loaded by other work, niced workers get less of the cores than the pass in this process",
    )
    args = ap.parse_args()
    if args.nice is not None:
        local_executor.OCR_NICE = args.nice
    config = OcrConfig(det_side=args.det_side, contrast=args.contrast, engine=args.engine, extend=args.extend)
    n = len(list(args.folder.iterdir()))
    work = Path(tempfile.mkdtemp(prefix="pixquery-ocr-cost-"))
    times: dict[str, list[float]] = {"none": [], "workers": [], "after": []}
    boxed = []
    # A warm-up run first (file cache, model files, the OCR engine's imports), not counted: the
    # first run of a session was 2-7x slower than the rounds after it here.
    with Library.open(work / "warm-up", model=args.model) as lib:
        lib.index([args.folder], ocr=config)
    load0 = os.getloadavg()
    for r in range(args.rounds):
        for mode in times:
            lib = Library.open(work / f"{mode}{r}", model=args.model)
            t = time.perf_counter()
            report = lib.index([args.folder], ocr=config if mode == "workers" else False)
            if mode == "after":  # the earlier design: every photo decoded again and read in this process
                ocr_mod.read_photos(lib.catalog, config.resolved())
            times[mode].append(time.perf_counter() - t)
            assert report.indexed == n and not report.failed, report.failed
            if mode == "workers":
                boxed.append(sum(1 for _, lines, _ in lib.catalog.ocr_scans() if lines))
            lib.close()
            print(f"round {r + 1} {mode}: {times[mode][-1]:.1f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    load1 = os.getloadavg()
    print(
        f"\n{n} photos without text ({args.folder}), model {args.model}, OCR {config.to_json()}, "
        f"decoders' nice with OCR {local_executor.OCR_NICE}, {args.rounds} rounds (medians); load average {load0[0]:.1f} before, {load1[0]:.1f} after\n"
    )
    print("| indexing | seconds | photos/s | speed vs without OCR |")
    print("|---|---|---|---|")
    for name, k in (
        ("without OCR", "none"),
        ("--ocr (detection in the decode workers)", "workers"),
        ("earlier design: OCR pass after embedding, in the main process", "after"),
    ):
        print(f"| {name} | {med[k]:.1f} | {n / med[k]:.2f} | {med['none'] / med[k]:.2f} |")
    for k in ("workers", "after"):
        per_round = [a / b for a, b in zip(times["none"], times[k])]
        print(
            f"\n{k}: speed vs without OCR, round by round: {', '.join(f'{x:.2f}' for x in per_round)} "
            f"(median {statistics.median(per_round):.2f})"
        )
    print(f"\nphotos where detection found a (false) box, so recognition ran: {boxed} of {n}")
    print(markdown(describe(("numpy", "pillow", "onnxruntime", "rapidocr", "rapidocr-onnxruntime", "opencv-python"))))


if __name__ == "__main__":
    main()
