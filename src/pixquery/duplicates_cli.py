"""`pixquery duplicates`: groups of copies in the library, as a table, tab-separated lines or JSON.
Registered by pixquery.cli. Reads only: nothing is ever deleted or moved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pixquery.duplicates import DEFAULT_THRESHOLD, KEEP_RULES
from pixquery.errors import PixqueryError


def _mb(n: int) -> str:
    """Bytes for people: 812 B, 4.1 kB, 3.2 MB, 1.20 GB."""
    for unit, scale, digits in (("GB", 1e9, 2), ("MB", 1e6, 1), ("kB", 1e3, 1)):
        if n >= scale:
            return f"{n / scale:.{digits}f} {unit}"
    return f"{n} B"


def _when(member) -> str:
    return member.to_dict()["date_iso"]


def register(app: typer.Typer) -> None:
    from pixquery import cli

    @app.command()
    def duplicates(
        threshold: Optional[float] = typer.Option(
            None,
            "--threshold",
            "-t",
            metavar="DISTANCE",
            help=f"Near-duplicate: embeddings at most this angular distance apart (0..1) [default: {DEFAULT_THRESHOLD}, "
            "an assumed value for real CLIP weights: see docs/duplicates.md]",
        ),
        keep: str = typer.Option("largest", "--keep", help=f"Which copy to suggest keeping: {', '.join(KEEP_RULES)}"),
        exact_only: bool = typer.Option(
            False, "--exact-only", help="Only exact copies (the same bytes), no embeddings compared"
        ),
        nprobe: Optional[int] = typer.Option(
            None,
            "--nprobe",
            help="Beyond 20,000 photos: index cells searched per photo (more: slower, finds more) [default: 8]",
        ),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Show only the first N groups (largest first)"),
        library: Optional[Path] = cli.LibraryOpt,
        model: Optional[str] = cli.ModelOpt,
        as_json: bool = typer.Option(False, "--json", help="Print the groups as JSON"),
    ):
        """Find exact copies and near-duplicates (resized, recompressed), largest groups first, with the one to keep. Deletes nothing."""
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from pixquery import duplicates as dup

        dup.check_keep(keep)
        dup.check_threshold(threshold)
        if limit is not None and limit < 0:
            raise PixqueryError(f"--limit must be 0 or more, not {limit}")
        with cli._open(library, model) as lib:
            bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=cli.err,
                transient=True,
            )
            task = {}

            def progress(stage: str, done: int, total: int) -> None:
                if total and stage not in task:
                    bar.start()
                    task[stage] = bar.add_task(stage, total=total)
                if stage in task:
                    bar.update(task[stage], completed=done)

            try:
                report = lib.duplicates(
                    threshold=threshold, keep=keep, near=not exact_only, nprobe=nprobe, progress=progress
                )
            finally:
                bar.stop()
            if not as_json and not exact_only:
                cli._warn_if_random(lib)
        groups = report.groups[:limit] if limit is not None else report.groups
        if as_json:
            data = report.to_dict()
            data["groups"] = [g.to_dict() for g in groups]
            print(json.dumps(data, indent=2))
            return
        if cli._piped():  # group, kind, role, distance to the kept one, bytes, WxH, date, path
            cli._emit(
                (
                    n,
                    g.kind,
                    "keep" if m.keep else "copy",
                    "" if m.distance is None else f"{m.distance:.4f}",
                    m.size,
                    f"{m.width or 0}x{m.height or 0}",
                    _when(m),
                    m.path,
                )
                for n, g in enumerate(groups, 1)
                for m in g.members
            )
        else:
            from rich.table import Table

            for n, g in enumerate(groups, 1):
                what = "exact copies" if g.kind == "exact" else "near-duplicates"
                cli.console.print(
                    f"[bold]group {n}[/]: {len(g.members)} {what}, {_mb(g.bytes - g.keep.size)} in the copies"
                )
                table = Table(box=None, show_header=True, header_style="dim")
                for col, just in (
                    ("", "left"),
                    ("distance", "right"),
                    ("size", "right"),
                    ("pixels", "right"),
                    ("date", "left"),
                ):
                    table.add_column(col, justify=just, no_wrap=True)
                table.add_column("path", overflow="fold")
                for m in g.members:
                    role = "[green]keep[/]" if m.keep else ("same bytes" if m.same_content_as_keep else "near")
                    table.add_row(
                        role,
                        "" if m.distance is None else f"{m.distance:.4f}",
                        _mb(m.size),
                        f"{m.width or 0}x{m.height or 0}",
                        _when(m)[:10],
                        escape(m.path),
                    )
                cli.console.print(table)
        shown = f" (first {len(groups)} shown)" if len(groups) < len(report.groups) else ""
        near = (
            f"near-duplicates within angular distance {report.threshold:g} (cosine {dup.cosine_of(report.threshold):.3f}), "
            if report.near
            else ""
        )
        note = (
            f"{len(report.groups)} groups{shown}, {sum(len(g.members) - 1 for g in report.groups)} copies, "
            f"{_mb(sum(g.bytes - g.keep.size for g in report.groups))} in the copies; exact copies and {near}"
            f"keep rule {report.keep_rule}; {report.photos} photos compared ({report.method}) in {report.seconds:.1f}s. "
            "Nothing was deleted."
        )
        for line in report.notes:
            note += f" Note: {line}."
        from pixquery.searchcmd import say

        say(f"[dim]{escape(note)}[/dim]", note)
