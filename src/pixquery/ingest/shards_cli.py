"""`pixquery embed SOURCE --engine ray --out DIR` and `pixquery import DIR`: batch embedding on a
Ray cluster into Parquet shards, and loading those into a library (see pixquery.ingest.shards).

Registered by pixquery.cli when this module is present (see cli._register_plugins).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from pixquery._cli_usage import Command

ENGINES = ("ray",)


def _cli():
    """The running pixquery.cli module: under `python -m pixquery.cli` that is __main__, a
    different module object from an `import pixquery.cli` (its Ctrl-C message state is there)."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "app", None) is not None and hasattr(main, "_state"):
        return main
    from pixquery import cli

    return cli


def register(app: typer.Typer) -> None:
    app.command("embed", cls=Command)(embed)
    app.command("import", cls=Command)(import_)


class _RichEmbedProgress:
    """Files done / total (resumed runs start at the files already in shards), images/s, ETA,
    and each failure as it comes."""

    def __init__(self, quiet: bool = False):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        err = _cli().err
        self.err, self.quiet = err, quiet
        # The rate is this run's files over the time since it started (Ray's start-up included):
        # results arrive in bursts, which makes rich's own estimate jump about.
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[failed]}"),
            console=err,
            transient=False,
            disable=quiet,
        )
        self.task = None

    def planned(self, files, partitions, done_files, done_partitions):
        if not self.quiet:
            resumed = f"; {done_partitions} already written ({done_files} files), resuming" if done_partitions else ""
            self.err.print(f"{files} files in {partitions} partitions{resumed}")
        self.started, self.done_before = time.monotonic(), done_files
        if files > done_files:
            self.progress.start()
            self.task = self.progress.add_task(
                "embedding", total=files, completed=done_files, failed="", rate="  ... img/s"
            )

    def advance(self, done, failed):
        if self.task is not None:
            rate = (done - self.done_before) / max(1e-9, time.monotonic() - self.started)
            self.progress.update(
                self.task, completed=done, failed=f"[red]{failed} failed" if failed else "", rate=f"{rate:5.1f} img/s"
            )

    def failure(self, path, reason):
        if not self.quiet:
            from rich.markup import escape

            self.progress.console.print(f"[red]failed[/red] {escape(path)}: {escape(reason)}")

    def stage(self, text):
        if not self.quiet:
            from rich.markup import escape

            self.err.print(f"[dim]{escape(text)}[/dim]")

    def close(self):
        self.progress.stop()


def _print_failures(console, failed) -> None:
    from rich.markup import escape

    for path, reason in failed[:50]:
        console.print(f"  [red]✗[/] {escape(path)}: {escape(reason)}")
    if len(failed) > 50:
        console.print(f"  ... and {len(failed) - 50} more (use --json for the full list)")


def embed(
    source: str = typer.Argument(
        ...,
        metavar="SOURCE",
        help="A folder, one image, or a text file listing paths or URLs (one a line); local or s3://, gs://, file://",
    ),
    out: str = typer.Option(
        ..., "--out", "-o", help="Folder (local or s3://, gs://) for the manifest and the Parquet shards"
    ),
    engine: str = typer.Option(
        "ray", "--engine", help="Where to run: ray (a Ray cluster, or a local Ray for this run)"
    ),
    address: Optional[str] = typer.Option(
        None,
        "--address",
        help="Ray cluster: 'auto' (this machine's), 'ray://HOST:PORT' or HOST:PORT [default: a local Ray for this run]",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Model name (see `pixquery models`) or a local model folder (the same path on every node)",
    ),
    precision: str = typer.Option("fp32", help="fp32 or int8 (quantised copy, faster)"),
    batch_size: int = typer.Option(32, help="Images per encoder batch"),
    partition_size: Optional[int] = typer.Option(
        None, help="Files per shard (default 10000; a resumed run keeps the first run's)"
    ),
    concurrency: Optional[int] = typer.Option(None, help="Encoder actors [default: one per GPU, else one per node]"),
    num_gpus: Optional[float] = typer.Option(
        None, help="GPUs per encoder actor [default: 1 where the cluster has GPUs, else 0]"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary and the failures"),
):
    """Embed a collection into Parquet shards on a Ray cluster (resumable; then `pixquery import`)."""
    from pixquery.encoders.registry import DEFAULT_MODEL
    from pixquery.errors import PixqueryError
    from pixquery.ingest.shards import embed_to_shards

    cli = _cli()
    if engine not in ENGINES:
        raise PixqueryError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if precision not in ("fp32", "int8"):
        raise PixqueryError(f"precision must be one of fp32, int8, not {precision!r}")
    cli._state["on_interrupt"] = ": the shards written so far are kept; run the same command to resume"
    ui = _RichEmbedProgress(quiet or as_json)
    try:
        # Ray prints its workers' and raylets' log lines (a retried task, a dead node) on this
        # process's stdout: they go to stderr with the progress, so stdout holds only the results.
        with contextlib.redirect_stdout(sys.stderr):
            report = embed_to_shards(
                source,
                out,
                model=model or DEFAULT_MODEL,
                precision=precision,
                batch_size=batch_size,
                partition_size=partition_size,
                address=address,
                concurrency=concurrency,
                num_gpus=num_gpus,
                progress=ui,
            )
    finally:
        ui.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        skipped = f", {report.skipped_partitions} already there" if report.skipped_partitions else ""
        cli.console.print(
            f"[bold green]embedded {report.embedded}[/], [bold {'red' if report.failed else 'green'}]failed "
            f"{len(report.failed)}[/]: {report.written_partitions} shards written{skipped} of {report.partitions}, "
            f"in {report.seconds:.1f}s ({report.images_per_second:.1f} images/s)",
            soft_wrap=True,
        )
        _print_failures(cli.console, report.failed)
    raise typer.Exit(cli.EXIT_FAILED_FILES if report.failed else cli.EXIT_OK)


STORE_ONLY_HELP = (
    "Load the vectors, with each file's path, width and height, straight into a Milvus collection "
    "(--index milvus --param uri=http://HOST:19530, or uri= for a milvus-lite file in the library), "
    "with no catalog row per image: for collections of 10^8 photos. Resumable (loaded shards are "
    "skipped); more embed runs can be imported later. Such a library searches by text, --image and "
    "vector, with thresholds, but cannot: `pixquery index` (no file versions to rescan: embed and "
    "import new photos instead), regions or videos, search by image id, `reindex` to another kind "
    "(the vectors live only in the collection), or take an import without --store-only. "
    "See docs/scale.md."
)


def import_(
    shards: str = typer.Argument(
        ..., metavar="DIR", help="The --out folder of `pixquery embed` (local or s3://, gs://)"
    ),
    library: Optional[Path] = typer.Option(
        None,
        "--library",
        "-L",
        help="Library folder [default: $PIXQUERY_LIBRARY or ~/.local/share/pixquery]",
        envvar="PIXQUERY_LIBRARY",
    ),
    store_only: bool = typer.Option(False, "--store-only", help=STORE_ONLY_HELP),
    index_kind: Optional[str] = typer.Option(
        None, "--index", help="--store-only: the index kind (milvus, the default)"
    ),
    param: list[str] = typer.Option(
        None,
        "--param",
        metavar="KEY=VALUE",
        help="--store-only: a milvus parameter: uri, collection, index_type, nlist... (repeatable; fixed by the first import)",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary"),
):
    """Load Parquet shards of `pixquery embed` into a library (idempotent) and update its index."""
    from rich.markup import escape

    from pixquery.errors import PixqueryError
    from pixquery.ingest.shards import import_shards

    cli = _cli()
    if not store_only and (index_kind or param):
        raise PixqueryError(
            "--index and --param go with --store-only: a catalog import uses the library's index "
            "(change it with pixquery reindex --index KIND)"
        )
    params = cli._index_params({}, param)  # checked before the library is opened
    cli._state["on_interrupt"] = ": shards imported so far are kept; run the same command again"
    lib = cli._open(library, create=True)
    if store_only:
        return _import_store_only(cli, lib, shards, index_kind, params, as_json, quiet)
    stage = (lambda s: None) if (quiet or as_json) else (lambda s: cli.err.print(f"[dim]{escape(s)}[/dim]"))
    try:
        report = import_shards(lib, shards, on_stage=stage)
    finally:
        lib.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        idx = report.index
        cli.console.print(
            f"[bold green]imported {report.imported}[/] images from {report.shards} shards "
            f"({escape(report.model)}), {report.unchanged} unchanged, {len(report.failed)} had failed "
            f"in the embed run, in {report.seconds:.1f}s",
            soft_wrap=True,
        )
        if idx:
            cli.console.print(
                f"index: {idx.kind}, {idx.total} entries"
                + (
                    " (rebuilt)"
                    if idx.rebuilt
                    else f" (+{idx.added} -{idx.removed})"
                    if idx.changed
                    else " (unchanged)"
                )
            )
        _print_failures(cli.console, report.failed)
        if report.library_model:
            cli.err.print(
                f"[yellow]note:[/] the library searches with {escape(report.library_model)}; these embeddings "
                f"are for {escape(report.model_spec)}: search them with -m {escape(report.model_spec)}",
                soft_wrap=True,
            )
    _exit_missing(cli, report.missing_partitions)


def _import_store_only(cli, lib, shards, kind, params, as_json, quiet):
    from rich.markup import escape

    from pixquery.ingest.store_only import import_store_only

    ui = cli._RichIndexProgress(quiet or as_json)
    try:
        report = import_store_only(lib, shards, kind=kind, params=params, on_stage=ui.stage, on_load=ui.loading)
    finally:
        if ui.task is not None:  # a bar is drawn (an unstarted one would print an empty line)
            ui.close()
        lib.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        skipped = f" ({report.skipped_shards} loaded before)" if report.skipped_shards else ""
        cli.console.print(
            f"[bold green]loaded {report.vectors}[/] vectors from {report.shards} shards{skipped} ({escape(report.model)}) "
            f"into {report.kind} collection {escape(report.collection)} at {escape(report.uri)}: {report.total} in all; "
            f"{len(report.failed) + report.failed_before} had failed in the embed run, in {report.seconds:.1f}s",
            soft_wrap=True,
        )
        _print_failures(cli.console, report.failed)
    _exit_missing(cli, report.missing_partitions)


def _exit_missing(cli, missing_partitions):
    if missing_partitions:
        cli.err.print(
            f"[yellow]{len(missing_partitions)} partitions of the manifest have no shard yet "
            f"(the embed run has not finished): run it again, then import again[/]",
            soft_wrap=True,
        )
        raise typer.Exit(cli.EXIT_FAILED_FILES)
    raise typer.Exit(cli.EXIT_OK)
