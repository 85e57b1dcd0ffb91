"""`pixquery video ...`: look at what the video sampler does with a file, before indexing a library.

    pixquery video info clip.mp4 other.mkv         duration, frame rate, size, codec
    pixquery video frames clip.mp4 --every 5       the frames that would be embedded, and why
    pixquery video frames clip.mp4 --save out/     ... written as JPEGs, named by timestamp
    pixquery video frame clip.mp4 00:12:31 -o f.jpg   the frame shown at a time (a search hit's)

Registered by pixquery.cli when this module is present (see cli._register_plugins).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pixquery._cli_usage import Command

video_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Inspect videos: headers, sampled frames, scene changes."
)


def register(app: typer.Typer) -> None:
    app.add_typer(video_app, name="video")


def parse_time(text: str) -> float:
    """'751.5', '12:31' or '00:12:31.5' -> seconds."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3:
        raise typer.BadParameter(f"not a time: {text!r} (use seconds, MM:SS or HH:MM:SS)")
    try:
        seconds = 0.0
        for p in parts:
            seconds = seconds * 60 + float(p)
    except ValueError:
        raise typer.BadParameter(f"not a time: {text!r} (use seconds, MM:SS or HH:MM:SS)") from None
    return seconds


@video_app.command("info", cls=Command)
def info(
    files: list[Path] = typer.Argument(..., metavar="FILES", help="Video files"),
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON"),
):
    """Duration, frame rate, size and codec, from the file's headers."""
    from pixquery.ingest.video import VideoError, format_timestamp, probe

    out, rc = [], 0
    for f in files:
        try:
            i = probe(f)
            out.append({"path": str(f), **i.__dict__, "created": i.created.isoformat() if i.created else None})
            if not as_json:
                fps = f"{i.fps:.3g} fps" if i.fps else "? fps"
                dur = format_timestamp(i.duration) if i.duration is not None else "?"
                typer.echo(f"{f}: {dur}, {fps}, {i.width}x{i.height}, {i.codec}, {i.frame_count or '?'} frames")
        except VideoError as e:
            rc = 1
            out.append({"path": str(f), "error": e.reason})
            if not as_json:
                typer.echo(f"{f}: {e.reason}", err=True)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    raise typer.Exit(rc)


@video_app.command("frames", cls=Command)
def frames(
    file: Path = typer.Argument(..., metavar="FILE", help="A video file"),
    every: float = typer.Option(2.0, "--every", help="A frame at least every N seconds (0: cuts only)"),
    scene_threshold: float = typer.Option(
        0.10, "--scene-threshold", help="Thumbnail difference (0..1) that is a cut; 0: off"
    ),
    static_threshold: float = typer.Option(
        0.02, "--static-threshold", help="Skip clock samples this close to the last one; 0: off"
    ),
    keyframes_only: bool = typer.Option(False, "--keyframes-only", help="Decode key frames only (fast, coarse)"),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the sampled frames as JPEGs into this folder"),
    as_json: bool = typer.Option(False, "--json", help="Print the frames and a summary as JSON"),
):
    """The frames pixquery would embed from a video, and why (clock or cut)."""
    from pixquery.ingest.video import DecodeStats, SamplingConfig, VideoError, format_timestamp, sample_frames

    cfg = SamplingConfig(
        every_seconds=every,
        scene_threshold=scene_threshold,
        static_threshold=static_threshold,
        keyframes_only=keyframes_only,
    )
    stats = DecodeStats()
    rows = []
    if save:
        save.mkdir(parents=True, exist_ok=True)
    try:
        for fr in sample_frames(file, cfg, stats):
            row = {
                "timestamp": round(fr.timestamp, 3),
                "why": "cut" if fr.scene_change else "clock",
                "difference": None if fr.difference is None else round(fr.difference, 4),
            }
            if save:
                name = save / f"{file.stem}_{fr.timestamp:010.3f}.jpg"
                fr.image.save(name, quality=90)
                row["file"] = str(name)
            rows.append(row)
            if not as_json:
                diff = "" if fr.difference is None else f"  diff {fr.difference:.3f}"
                typer.echo(f"{format_timestamp(fr.timestamp)} ({fr.timestamp:9.3f} s)  {row['why']:5}{diff}")
    except VideoError as e:
        typer.echo(f"{file}: {e.reason}", err=True)
        raise typer.Exit(1) from None
    total = (stats.info.frame_count if stats.info else None) or stats.decoded
    summary = {
        "sampled": stats.sampled,
        "frames": total,
        "decoded": stats.decoded,
        "cuts": stats.scene_changes,
        "static_skipped": stats.static_skipped,
        "problem": stats.problem(),
    }
    if as_json:
        typer.echo(json.dumps({"path": str(file), "frames": rows, "summary": summary}, indent=2))
    else:
        share = f" ({100 * stats.sampled / total:.2f}% of {total})" if total else ""
        typer.echo(
            f"{stats.sampled} frames sampled{share}: {stats.scene_changes} at cuts, "
            f"{stats.static_skipped} clock samples skipped as unchanged; {stats.decoded} frames decoded"
        )
        if stats.problem():
            typer.echo(f"{file}: {stats.problem()}", err=True)


@video_app.command("frame", cls=Command)
def frame(
    file: Path = typer.Argument(..., metavar="FILE", help="A video file"),
    at: str = typer.Argument(..., metavar="TIME", help="Time: seconds, MM:SS or HH:MM:SS (as search results print it)"),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the frame (.jpg, .png)"),
):
    """Write the frame shown at a given time (e.g. a search hit's) to an image file."""
    from pixquery.ingest.video import VideoError, extract_frame

    try:
        extract_frame(file, parse_time(at)).save(out)
    except VideoError as e:
        typer.echo(f"{file}: {e.reason}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(out))
