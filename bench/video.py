"""Video indexing speed against the photo pipeline's, and how few frames the sampler embeds.

    flock /tmp/pixquery-bench.lock python bench/video.py --model models/random-vit-b-32

Makes two test videos with PyAV (libx264 "veryfast": B-frames and reference frames, as cameras
and phones write them), from real photos when ../shared/data is there:
  film:  1280x720, 30 fps, a new photo every 10 s with a slow zoom and pan (a cut every 10 s),
         light sensor noise;
  cctv:  640x360, 15 fps, a fixed camera on one scene with sensor noise, a person-sized block
         walking across it three times for 10 s; static the rest of the time.
Then measures, in one process on this machine (the machine is shared: the main figures are the
best of --rounds interleaved rounds, and CPU time per embedding is given beside wall time):
  encoder:  the image encoder alone on preprocessed batches, images/s (the ceiling);
  photos:   `Library.index` on N photos (the photo pipeline), images/s;
  decode:   sampling alone (decode + scene/static measure, no encoder), video frames/s;
  videos:   `update_videos` (decode + sample + embed + one catalog transaction per video), in
            embedded frames/s (to compare with images/s), video frames covered/s and real-time
            factor (video seconds per wall second); sampling efficiency = embedded / total frames;
  variants: keyframes only; static skipping off; regions (tiles 2 and 3) on a short clip.
Full-size random weights (scripts/make_tiny_models.py --full): speed does not depend on weights.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "src"))
from machine import describe, markdown  # noqa: E402

from pixquery.catalog import Catalog  # noqa: E402
from pixquery.encoders.registry import load_encoder  # noqa: E402
from pixquery.ingest.regions import RegionConfig  # noqa: E402
from pixquery.ingest.scan import IMAGE_EXTENSIONS  # noqa: E402
from pixquery.ingest.video import DecodeStats, SamplingConfig, probe, sample_frames, update_videos  # noqa: E402

SHARED_PHOTOS = ROOT.parent / "shared" / "data" / "imagenet-sample-images" / "images"


def source_photos(n: int, seed: int = 0) -> list[Image.Image]:
    files = (
        sorted(p for p in SHARED_PHOTOS.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if SHARED_PHOTOS.exists()
        else []
    )
    if files:
        rng = np.random.default_rng(seed)
        return [Image.open(files[i]).convert("RGB") for i in rng.choice(len(files), n, replace=False)]
    sys.path.insert(0, str(ROOT / "tests"))
    from photos import photo

    return [photo((800, 600), seed=seed + i) for i in range(n)]


def _writer(path: Path, size, fps: int):
    import av

    out = av.open(str(path), "w", options={"movflags": "+faststart"})
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, fps)
    stream.options = {"preset": "veryfast", "crf": "23"}  # B-frames and references as by default
    return out, stream


def _mux(out, stream, arr: np.ndarray, n: int):
    import av

    frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
    frame.pts = n
    for packet in stream.encode(frame):
        out.mux(packet)


def _finish(out, stream):
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def make_film(path: Path, seconds: int, scene_seconds: int = 10, size=(1280, 720), fps: int = 30) -> Path:
    """A photo per scene, slowly zooming and panning (Ken Burns), light noise."""
    w, h = size
    photos = source_photos(max(1, seconds // scene_seconds), seed=1)
    rng = np.random.default_rng(0)
    noise = [rng.normal(0, 2.0, (h, w, 1)).astype(np.int16) for _ in range(8)]  # cycled: cheap to make
    out, stream = _writer(path, size, fps)
    n = 0
    for photo in photos:
        scale = 1.3 * max(w / photo.width, h / photo.height)  # covers the frame with room to pan
        src = photo.resize((int(photo.width * scale) + 1, int(photo.height * scale) + 1), Image.Resampling.BILINEAR)
        frames = scene_seconds * fps
        for i in range(frames):
            p = i / frames
            zoom = 1.0 + 0.15 * p
            cw, ch = w * 1.15 / zoom, h * 1.15 / zoom
            x0 = (src.width - cw) * (0.2 + 0.6 * p)
            y0 = (src.height - ch) / 2
            arr = np.asarray(
                src.resize((w, h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch)), dtype=np.int16
            )
            arr = np.clip(arr + noise[n % len(noise)], 0, 255).astype(np.uint8)
            _mux(out, stream, arr, n)
            n += 1
    _finish(out, stream)
    return path


def make_cctv(
    path: Path, seconds: int, size=(640, 360), fps: int = 15, walks=((30, 40), (95, 105), (160, 170))
) -> Path:
    """A fixed camera: one scene, sensor noise, a dark person-sized block crossing it a few times."""
    w, h = size
    scene = np.asarray(source_photos(1, seed=7)[0].resize(size, Image.Resampling.BILINEAR), dtype=np.int16)
    rng = np.random.default_rng(1)
    noise = [rng.normal(0, 2.5, (h, w, 1)) for _ in range(8)]  # a few noise fields, cycled (cheap)
    pw, ph = w // 20, h // 5
    out, stream = _writer(path, size, fps)
    for n in range(seconds * fps):
        t = n / fps
        arr = scene + noise[n % len(noise)]
        for a, b in walks:
            if a <= t < b:
                x = int((w - pw) * (t - a) / (b - a))
                y = int(h * 0.55)
                arr[y : y + ph, x : x + pw] = (40, 40, 60)
        _mux(out, stream, np.clip(arr, 0, 255).astype(np.uint8), n)
    _finish(out, stream)
    return path


@contextmanager
def timed(out: dict):
    """Wall and CPU (this process, all threads) seconds of the block, into out."""
    w, c = time.perf_counter(), time.process_time()
    yield out
    out["seconds"] = time.perf_counter() - w
    out["cpu_seconds"] = time.process_time() - c


def encoder_alone(encoder, n: int = 64, batch_size: int = 32) -> dict:
    """The encoder on already preprocessed tensors: the ceiling of any pipeline."""
    from pixquery.ingest.decode import normalize, resize_crop

    cfg = encoder.preprocess_cfg
    tensors = normalize(np.stack([resize_crop(p, cfg) for p in source_photos(n, seed=3)]), cfg)
    out: dict = {"images": n}
    with timed(out):
        for i in range(0, n, batch_size):
            encoder.encode_images(tensors[i : i + batch_size])
    out["images_per_second"] = n / out["seconds"]
    out["cpu_ms_per_image"] = 1000 * out["cpu_seconds"] / n
    return out


def photo_pipeline(model: str, n: int, tmp: Path) -> dict:
    """Library.index on n photos, images/s over the whole run (as bench/ingest.py measures it)."""
    from pixquery.api import Library

    folder = tmp / "photos"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.rmtree(tmp / "photolib", ignore_errors=True)
    folder.mkdir()
    files = (
        sorted(p for p in SHARED_PHOTOS.glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:n]
        if SHARED_PHOTOS.exists()
        else []
    )
    if files:
        for f in files:
            (folder / f.name).symlink_to(f.resolve())
    else:
        for i, img in enumerate(source_photos(n)):
            img.save(folder / f"p{i:04d}.jpg", quality=90)
    lib = Library.open(tmp / "photolib", model=model)
    enc = lib.encoder
    enc.encode_images(np.zeros((1, 3, enc.preprocess_cfg.size, enc.preprocess_cfg.size), "float32"))
    t0 = time.perf_counter()
    report = lib.index([folder])
    seconds = time.perf_counter() - t0
    lib.close()
    return {"photos": report.indexed, "seconds": seconds, "images_per_second": report.indexed / seconds}


def decode_only(path: Path, sampling: SamplingConfig) -> dict:
    stats = DecodeStats()
    t0 = time.perf_counter()
    n = sum(1 for _ in sample_frames(path, sampling, stats))
    seconds = time.perf_counter() - t0
    info = stats.info
    return {
        "frames": info.frame_count,
        "decoded": stats.decoded,
        "sampled": n,
        "seconds": seconds,
        "video_frames_per_second": info.frame_count / seconds,
        "realtime": (info.duration or 0) / seconds,
    }


def index_run(
    encoder, path: Path, tmp: Path, name: str, sampling: SamplingConfig, regions: RegionConfig | None = None
) -> dict:
    lib = tmp / f"lib-{name}"
    shutil.rmtree(lib, ignore_errors=True)
    cat = Catalog(lib / "catalog.sqlite")
    with cat.transaction():
        model = cat.ensure_model(encoder.name, encoder.fingerprint, encoder.dim)
    t: dict = {}
    with timed(t):
        rep = update_videos(cat, encoder, model.id, [str(path)], sampling=sampling, regions=regions)
    seconds = t["seconds"]
    cat.close()
    assert rep.indexed == 1, rep.failed
    return {
        "frames": rep.total_frames,
        "decoded": rep.decoded_frames,
        "embedded_frames": rep.frames,
        "regions": rep.regions,
        "seconds": seconds,
        "video_seconds": rep.video_seconds,
        "embedded_per_second": rep.embedded / seconds,
        "video_frames_per_second": rep.total_frames / seconds,
        "realtime": rep.video_seconds / seconds,
        "efficiency": rep.frames / rep.total_frames,
        "decode_seconds": rep.decode_seconds,
        "encode_seconds": rep.encode_seconds,
        "cpu_seconds": t["cpu_seconds"],
        "cpu_ms_per_embedding": 1000 * t["cpu_seconds"] / max(1, rep.embedded),
    }


def best(runs: list[dict], key: str) -> dict:
    """The run with the highest `key`, with every run's value of it kept (the spread)."""
    top = dict(max(runs, key=lambda r: r[key]))
    top["all_" + key] = [round(r[key], 3) for r in runs]
    return top


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "random-vit-b-32"))
    ap.add_argument("--film-seconds", type=int, default=120)
    ap.add_argument("--cctv-seconds", type=int, default=240)
    ap.add_argument("--photos", type=int, default=96, help="photos for the photo pipeline's images/s")
    ap.add_argument("--regions-seconds", type=int, default=20, help="length of the clip indexed with regions (0: skip)")
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of encoder / photos / videos; the best is kept"
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "pixquery-bench-videos",
        help="where the generated test videos are kept between runs",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "video")
    args = ap.parse_args()

    model_note = ""
    if not Path(args.model).exists() and "/" in args.model:
        fallback = ROOT / "models" / "tiny-vit-b-32"
        print(
            f"{args.model} not found (scripts/make_tiny_models.py --full writes it): using {fallback}", file=sys.stderr
        )
        args.model, model_note = (
            str(fallback),
            " (TINY model: full-size weights were not available; speeds are not ViT-B/32's)",
        )
    encoder = load_encoder(args.model)
    encoder.encode_images(np.zeros((2, 3, encoder.preprocess_cfg.size, encoder.preprocess_cfg.size), "float32"))
    tmp = Path(tempfile.mkdtemp(prefix="pixquery-bench-video-"))
    results: dict = {"model": args.model, "model_note": model_note, "load_before": os.getloadavg()}
    try:
        t = time.perf_counter()
        args.cache.mkdir(parents=True, exist_ok=True)
        film = args.cache / f"film-{args.film_seconds}s.mp4"
        cctv = args.cache / f"cctv-{args.cctv_seconds}s.mp4"
        if not film.exists():
            make_film(film.with_suffix(".tmp.mp4"), args.film_seconds).rename(film)
        if not cctv.exists():
            make_cctv(cctv.with_suffix(".tmp.mp4"), args.cctv_seconds).rename(cctv)
        print(f"test videos ready in {time.perf_counter() - t:.0f} s ({args.cache})", flush=True)
        videos = {"film": film, "cctv": cctv}
        results["videos"] = {k: {**probe(p).__dict__, "bytes": p.stat().st_size} for k, p in videos.items()}

        default = SamplingConfig()
        rounds: dict[str, list] = {"encoder": [], "photos": []}
        for r in range(args.rounds):
            rounds["encoder"].append(encoder_alone(encoder))
            rounds["photos"].append(photo_pipeline(args.model, args.photos, tmp))
            for vname, path in videos.items():
                rounds.setdefault(f"{vname} / default", []).append(index_run(encoder, path, tmp, vname, default))
            print(
                f"round {r + 1}: encoder {rounds['encoder'][-1]['images_per_second']:.2f} img/s, "
                f"photos {rounds['photos'][-1]['images_per_second']:.2f} img/s, "
                + ", ".join(
                    f"{k} {v[-1]['embedded_per_second']:.2f} embedded/s" for k, v in rounds.items() if "/" in k
                ),
                flush=True,
            )
        results["encoder"] = best(rounds["encoder"], "images_per_second")
        results["photos"] = best(rounds["photos"], "images_per_second")
        results["index"] = {k: best(v, "embedded_per_second") for k, v in rounds.items() if "/" in k}

        variants = {
            "keyframes only": SamplingConfig(keyframes_only=True),
            "static skipping off": SamplingConfig(static_threshold=0.0),
        }
        results["decode"] = {}
        for vname, path in videos.items():
            for label, cfg in {"default": default, **variants}.items():
                d = decode_only(path, cfg)
                results["decode"][f"{vname} / {label}"] = d
                print(
                    f"decode {vname:5} {label:20}: {d['video_frames_per_second']:7.1f} frames/s, {d['realtime']:5.1f}x real time, "
                    f"{d['sampled']} sampled",
                    flush=True,
                )
                if label != "default":
                    r = index_run(encoder, path, tmp, f"{vname}-{label.replace(' ', '_')}", cfg)
                    results["index"][f"{vname} / {label}"] = r
            for label in ("default", *variants):
                r = results["index"][f"{vname} / {label}"]
                print(
                    f"index  {vname:5} {label:20}: {r['embedded_frames']} of {r['frames']} frames embedded "
                    f"({100 * r['efficiency']:.2f}%), {r['embedded_per_second']:.2f} embedded/s, "
                    f"{r['video_frames_per_second']:.1f} video frames/s, {r['realtime']:.1f}x real time",
                    flush=True,
                )
        if args.regions_seconds:
            clip = args.cache / f"clip-{args.regions_seconds}s.mp4"
            if not clip.exists():
                make_film(clip.with_suffix(".tmp.mp4"), args.regions_seconds).rename(clip)
            r = index_run(encoder, clip, tmp, "regions", default, RegionConfig())
            results["index"]["film clip / default + regions (tiles 2, 3)"] = r
            print(
                f"regions: {r['embedded_frames']} frames + {r['regions']} regions, {r['embedded_per_second']:.2f} embedded/s, "
                f"{r['realtime']:.2f}x real time",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_after"] = os.getloadavg()

    machine = describe(packages=("numpy", "pillow", "onnxruntime", "av", "faiss-cpu"))
    results["machine"] = machine
    img_s = results["photos"]["images_per_second"]
    enc = results["encoder"]
    cmd = (
        f"flock /tmp/pixquery-bench.lock python bench/video.py --model {os.path.relpath(args.model, ROOT)} "
        f"--film-seconds {args.film_seconds} --cctv-seconds {args.cctv_seconds} --photos {args.photos} "
        f"--regions-seconds {args.regions_seconds} --rounds {args.rounds}"
    )
    load = f"load average {results['load_before'][0]:.1f} before, {results['load_after'][0]:.1f} after"
    lines = [
        "# Video indexing: speed against the photo pipeline, and sampling efficiency",
        "",
        f"Command: `{cmd}`",
        "",
        markdown(machine),
        "",
        f"The machine was shared with other work while this ran ({load}, on {machine['cores']} cores): wall-clock "
        f"figures are the best of {args.rounds} interleaved rounds (all rounds in video.json), and the CPU time this "
        "process spent per embedding is given beside them (less sensitive to the neighbours).",
        "",
        f"Model: `{os.path.relpath(args.model, ROOT)}`{model_note}, random weights (speed does not depend on weight values).",
        "",
        "Test videos (made by the script, libx264 preset veryfast: B-frames, 3 references):",
        "",
        "| video | size | fps | length | frames | bytes |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for k, v in results["videos"].items():
        lines.append(
            f"| {k} | {v['width']}x{v['height']} | {v['fps']:.0f} | {v['duration']:.0f} s | {v['frame_count']} | {v['bytes']:,} |"
        )
    lines += [
        "",
        f"Photo pipeline (`Library.index`, {results['photos']['photos']} photos): **{img_s:.2f} images/s** "
        f"(rounds: {', '.join(f'{x:.2f}' for x in results['photos']['all_images_per_second'])}). "
        f"Encoder alone on preprocessed batches: {enc['images_per_second']:.2f} images/s, {enc['cpu_ms_per_image']:.0f} CPU ms an image.",
        "",
        "Decode + sampling alone (no encoder):",
        "",
        "| video / sampling | video frames/s | x real time | frames decoded | frames sampled |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, d in results["decode"].items():
        lines.append(
            f"| {k} | {d['video_frames_per_second']:.0f} | {d['realtime']:.1f} | {d['decoded']} | {d['sampled']} |"
        )
    lines += [
        "",
        "Indexing (`update_videos`: decode + sample + embed + catalog), in one process:",
        "",
        "| video / sampling | frames embedded / total | sampling efficiency | embedded/s | vs photos img/s | CPU ms / embedding (encoder alone: "
        f"{enc['cpu_ms_per_image']:.0f}) | video frames/s | x real time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for k, r in results["index"].items():
        lines.append(
            f"| {k} | {r['embedded_frames']}{' + ' + str(r['regions']) + ' regions' if r['regions'] else ''} / {r['frames']} "
            f"| {100 * r['efficiency']:.2f}% | {r['embedded_per_second']:.2f} | {r['embedded_per_second'] / img_s:.2f} "
            f"| {r['cpu_ms_per_embedding']:.0f} | {r['video_frames_per_second']:.1f} | {r['realtime']:.2f} |"
        )
    lines += [
        "",
        "Sampling efficiency = frames embedded / frames in the video (the default samples every 2 s, at each cut, "
        "and skips periodic samples identical to the last one). 'embedded/s' counts embeddings written "
        "(frames, plus regions where on) per wall second, to compare with the photo pipeline's images/s.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
