"""The command line: pixquery index | search | info | models | reindex | demo | export (+ eval, serve).

Errors a user can act on (PixqueryError) are printed as one line, with no traceback, and exit 2.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # `python -m pixquery.cli`: the same entry as the installed command,
    from pixquery.launch import main as _launch  # which answers a plain search without typer (below)

    _launch()

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from pixquery._cli_usage import Command
from pixquery.errors import PixqueryError

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = """\b
Exit codes:
  0    success
  1    some files could not be read (index, eval, video info); the rest was done.
       index: only new failures count (a file still broken as before exits 0)
  2    usage or user error: bad option or value, no library there, model not available, busy port
  130  interrupted (Ctrl-C); for index, what was embedded is kept: run the same command to resume"""

# Help is plain text (rich_markup_mode=None): Rich markup would eat every [bracket] in help texts,
# e.g. pixquery[torch], and typer's Rich panels add a <type> column of noise.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    epilog=EXIT_CODES,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err = Console(stderr=True)

LibraryOpt = typer.Option(
    None,
    "--library",
    "-L",
    help="Library folder [default: $PIXQUERY_LIBRARY or ~/.local/share/pixquery]",
    envvar="PIXQUERY_LIBRARY",
)
ModelOpt = typer.Option(None, "--model", "-m", help="Model name (see `pixquery models`) or a local model folder")
# The index kind and its parameters, shared by `index` and `reindex`.
IndexKindOpt = typer.Option(None, "--index", help="Index kind: flat, hnsw, annoy, ivf, sharded, milvus, auto")
IndexOpts = {
    "M": typer.Option(None, "--M", help="hnsw: links per node"),
    "ef_construction": typer.Option(None, help="hnsw: build-time candidate list"),
    "ef_search": typer.Option(None, help="hnsw: query-time candidate list"),
    "n_trees": typer.Option(None, help="annoy: number of trees"),
    "search_k": typer.Option(None, help="annoy: nodes inspected per query"),
    "nlist": typer.Option(None, help="ivf: number of clusters"),
    "nprobe": typer.Option(None, help="ivf: clusters visited per query"),
    "storage": typer.Option(None, help="flat/ivf: vector storage (float32, float16, int8, pq...)"),
    "param": typer.Option(
        None,
        "--param",
        metavar="KEY=VALUE",
        help="Any other index parameter (repeatable), e.g. --param uri=http://HOST:19530 for milvus",
    ),
}


def _version(value: bool) -> None:
    if value:
        from pixquery import __version__

        print(f"pixquery {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit"
    ),
    verbose: int = typer.Option(
        0,
        "--verbose",
        "-v",
        count=True,
        help="Log more to stderr: -v what happens (rebuilds, fallbacks, skipped files), -vv debug",
    ),
    log_level: Optional[str] = typer.Option(
        None,
        "--log-level",
        metavar="LEVEL",
        envvar="PIXQUERY_LOG_LEVEL",
        help="Log level on stderr: debug, info, warning (the default), error",
    ),
) -> None:
    """Search your photos with words."""
    from pixquery import logs

    logs.configure(logs.level_for(verbose, log_level))


def _warn_if_random(lib) -> None:
    """A random-weight test model (made by scripts/make_tiny_models.py or `export --random`)
    ranks photos meaninglessly: every command that uses one says so, on stderr."""
    if getattr(lib.encoder, "random_weights", False):
        err.print(
            f"[yellow]warning: {escape(lib.model_name)} is a random-weight test model: its rankings are meaningless[/]"
        )


def _open(
    library: Optional[Path], model: Optional[str] = None, precision: Optional[str] = None, *, create: bool = False
):
    """The library at `library` (default: $PIXQUERY_LIBRARY or ~/.local/share/pixquery). Only `index`
    creates one: elsewhere a mistyped path is "no library at PATH" at once, before the model loads.
    precision None: the library's own (Library.open's default), not a forced fp32."""
    from pixquery.api import Library

    kw = {} if precision is None else {"precision": precision}
    return Library.open(library, model=model, create=create, **kw)


def _piped() -> bool:
    """stdout is a pipe or a file, not a terminal: print plain lines for other programs."""
    try:
        return not os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return True


def _field(value) -> str:
    """One tab-separated field: never split by a tab or a newline inside it."""
    return str(value).replace("\t", "\\t").replace("\n", "\\n")


def _emit(rows) -> None:
    """Tab-separated lines on stdout: no wrapping at any width, no padding, no colour."""
    try:
        for row in rows:
            sys.stdout.write("\t".join(_field(v) for v in row) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_OK) from None


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "img")
        return Text(f"{speed:5.1f} {unit}/s" if speed else f"  ... {unit}/s", style="cyan")


class _RichIndexProgress:
    """Draws the scan summary, a progress bar with images/s and ETA, and each failure."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[failed]}"),
            console=err,
            transient=False,
            disable=quiet,
        )
        self.task = None
        self.unsupported = 0  # files whose format's plugin is missing (api calls missing_plugin first)

    def scanned(self, found, to_embed, deleted):
        if not self.quiet:
            unchanged = found - to_embed - self.unsupported
            plugins = f", {self.unsupported} need a plugin (below)" if self.unsupported else ""
            err.print(
                f"found {found} images: {to_embed} to embed, {unchanged} unchanged{plugins}, {deleted} removed from disk"
            )

    def started_embedding(self, total):
        if total:
            self.progress.start()
            self.task = self.progress.add_task("embedding", total=total, failed="")

    def advance(self, done, failed):
        if self.task is not None:
            self.progress.update(self.task, completed=done, failed=f"[red]{failed} failed" if failed else "")

    def failure(self, path, reason):
        if not self.quiet:
            self.progress.console.print(f"[red]failed[/red] {escape(path)}: {escape(reason)}")

    def missing_plugin(self, fmt, count, reason):
        self.unsupported += count  # said once per format in the summary, where it is seen

    def stage(self, text):
        if self.task is not None:
            self.progress.stop()  # the finished bar stays printed; drawn again by the next start: no
            self.progress.remove_task(self.task)
            self.task = None
        if not self.quiet:
            err.print(f"[dim]{escape(text)}[/dim]")

    def reading_text(self, done, total):
        if self.task is None and total:
            self.progress.start()
            self.task = self.progress.add_task("reading text", total=total, failed="")
        if self.task is not None:
            self.progress.update(self.task, completed=done)

    def loading(self, done, total):
        if self.task is None and total:
            self.progress.start()
            self.task = self.progress.add_task("loading index", total=total, failed="", unit="vec")
        if self.task is not None:
            self.progress.update(self.task, completed=done)

    def reading_metadata(self, done, total):
        if self.task is None and total:
            self.progress.start()
            self.task = self.progress.add_task("reading dates", total=total, failed="", unit="file")
        if self.task is not None:
            self.progress.update(self.task, completed=done)

    def close(self):
        self.progress.stop()


def _index_params(kw: dict, extra: list[str]) -> dict:
    params = {k: v for k, v in kw.items() if v is not None}
    for item in extra or []:
        if "=" not in item:
            raise PixqueryError(f"--param takes KEY=VALUE, not {item!r}")
        key, value = item.split("=", 1)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


@app.command()
def index(
    paths: list[Path] = typer.Argument(
        None,
        metavar="PATHS",
        help="Folders or files to add (default: rescan the library's folders)",
        show_default=False,
    ),
    library: Optional[Path] = LibraryOpt,
    model: Optional[str] = ModelOpt,
    precision: Optional[str] = typer.Option(None, help="fp32 (default) or int8 (quantised copy, faster)"),
    index_kind: Optional[str] = IndexKindOpt,
    M: Optional[int] = IndexOpts["M"],
    ef_construction: Optional[int] = IndexOpts["ef_construction"],
    ef_search: Optional[int] = IndexOpts["ef_search"],
    n_trees: Optional[int] = IndexOpts["n_trees"],
    search_k: Optional[int] = IndexOpts["search_k"],
    nlist: Optional[int] = IndexOpts["nlist"],
    nprobe: Optional[int] = IndexOpts["nprobe"],
    storage: Optional[str] = IndexOpts["storage"],
    param: list[str] = IndexOpts["param"],
    config: Optional[Path] = typer.Option(None, "--config", help="TOML settings file ([model], [index], [ingest])"),
    batch_size: Optional[int] = typer.Option(None, help="Images per encoder batch"),
    workers: Optional[int] = typer.Option(None, help="Decoder processes [default: one per core]"),
    regions: Optional[bool] = typer.Option(
        None,
        "--regions/--no-regions",
        help="Also embed tiles of photos and video frames (find small things; results show a box). Kept for later runs",
    ),
    ocr: Optional[bool] = typer.Option(
        None,
        "--ocr/--no-ocr",
        help="Also read the text in photos and video frames, so searches match it (needs pixquery[ocr]). Kept for later runs",
    ),
    ocr_size: Optional[int] = typer.Option(
        None,
        "--ocr-size",
        help="OCR: the long side, in pixels, text detection sees (default 480; 960 finds smaller text at ~4x the cost). Turns OCR on; kept",
    ),
    detector: Optional[str] = typer.Option(
        None, "--detector", help="An ONNX object detector whose boxes are embedded too (see docs/video.md)"
    ),
    videos: bool = typer.Option(True, "--videos/--no-videos", help="Index video files too"),
    every: Optional[float] = typer.Option(
        None, "--every", help="Videos: a frame at least every N seconds (default 2, kept for later runs)"
    ),
    exclude: list[str] = typer.Option(
        None,
        "--exclude",
        metavar="GLOB",
        help="Leave out what this .gitignore-style glob matches in the folders "
        "(repeatable; kept for later runs; .pixqueryignore files work too)",
    ),
    clear_exclude: bool = typer.Option(False, "--clear-exclude", help="Forget the folders' --exclude globs"),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="Where decoding and encoding run: local (this machine) or ray (a Ray cluster; needs pixquery[ray])",
    ),
    address: Optional[str] = typer.Option(
        None, "--address", help="ray: the cluster, 'auto' or ray://HOST:PORT [default: start a local Ray for the run]"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary and the failures"),
):
    """Index photos: embed new and changed files, drop deleted ones, update the search index."""
    from pixquery.config import Settings

    _state["on_interrupt"] = ": what was indexed so far is kept; run the same command to resume"

    if exclude and clear_exclude:
        raise PixqueryError("give --exclude GLOB (the folders' new globs) or --clear-exclude, not both")
    settings = Settings.load(config)
    params = dict(settings.index.params)
    params.update(
        _index_params(
            dict(
                M=M,
                ef_construction=ef_construction,
                ef_search=ef_search,
                n_trees=n_trees,
                search_k=search_k,
                nlist=nlist,
                nprobe=nprobe,
                storage=storage,
            ),
            param,
        )
    )
    kind = index_kind or settings.index.kind
    if ocr_size is not None:
        from pixquery.ingest.ocr import OcrConfig

        if ocr is False:
            raise PixqueryError("--ocr-size reads text in photos: it cannot go with --no-ocr")
        if not 64 <= ocr_size <= 4096:
            raise PixqueryError(f"--ocr-size is a side in pixels between 64 and 4096, not {ocr_size}")
        ocr = OcrConfig(det_side=ocr_size)
    lib = _open(library, model or settings.model.name, precision or settings.model.precision, create=True)
    ui = _RichIndexProgress(quiet or as_json)
    try:
        report = lib.index(
            [str(p) for p in paths] if paths else None,
            index=kind,
            index_params=params or None,
            batch_size=batch_size or settings.ingest.batch_size,
            workers=workers or settings.ingest.workers,
            draft=settings.ingest.draft,
            progress=ui,
            regions=regions,
            detector=detector,
            videos=videos,
            every_seconds=every,
            engine=engine,
            address=address,
            ocr=ocr,
            exclude=[] if clear_exclude else (list(exclude) if exclude else None),
        )
    finally:
        ui.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        idx = report.index
        console.print(
            f"[bold green]indexed {report.indexed}[/], skipped {report.skipped} unchanged, "
            f"removed {report.removed}, [bold {'red' if report.failed else 'green'}]failed {len(report.failed)}[/] "
            f"in {report.seconds:.1f}s ({report.images_per_second:.1f} images/s)"
        )
        if report.text_photos:
            console.print(
                f"text: read {report.text_photos} photos, {report.text_lines} lines found "
                f"in {report.ocr_seconds:.1f}s ({report.text_photos / max(report.ocr_seconds, 1e-9):.1f} photos/s)"
            )
        if report.text_videos:
            console.print(
                f"text: read {report.text_videos} videos ({report.text_video_frames} frames), "
                f"{report.text_video_lines} lines found in {report.ocr_video_seconds:.1f}s "
                f"({report.text_video_frames / max(report.ocr_video_seconds, 1e-9):.1f} frames/s)"
            )
        if idx:
            console.print(
                f"index: {idx.kind}, {idx.total} entries, {idx.size_bytes / 1e6:.2f} MB"
                + (
                    " (rebuilt)"
                    if idx.rebuilt
                    else f" (+{idx.added} -{idx.removed})"
                    if idx.changed
                    else " (unchanged)"
                )
            )
        new = set(report.new_failures)
        # Files whose format's plugin is missing: one line per format (each file is in --json).
        for fmt, (reason, paths) in report.missing_plugins.items():
            console.print(
                f"  [red]✗[/] {len(paths)} {escape(fmt)} file{'s' if len(paths) != 1 else ''} not indexed "
                f"(e.g. {escape(paths[0])}): {escape(reason)}",
                soft_wrap=True,
            )
        unsupported = {p for _, paths in report.missing_plugins.values() for p in paths}
        listed = [(p, r) for p, r in report.failed if p not in unsupported]
        for path, reason in listed[:50]:
            known = "" if (path, reason) in new else " [dim](failed before, unchanged since)[/]"
            console.print(f"  [red]✗[/] {escape(path)}: {escape(reason)}{known}")
        if len(listed) > 50:
            console.print(f"  ... and {len(listed) - 50} more (use --json for the full list)")
    if not as_json:
        _warn_if_random(lib)  # last, where it is seen (and after the options were checked)
    lib.close()
    # Exit 1 only when something failed that had not failed before in the same way: a file that
    # stays broken is listed on every run, but a nightly cron job does not fail for it each night.
    raise typer.Exit(EXIT_FAILED_FILES if report.new_failures else EXIT_OK)


@app.command()
def reindex(
    library: Optional[Path] = LibraryOpt,
    model: Optional[str] = ModelOpt,
    index_kind: Optional[str] = IndexKindOpt,
    M: Optional[int] = IndexOpts["M"],
    ef_construction: Optional[int] = IndexOpts["ef_construction"],
    ef_search: Optional[int] = IndexOpts["ef_search"],
    n_trees: Optional[int] = IndexOpts["n_trees"],
    search_k: Optional[int] = IndexOpts["search_k"],
    nlist: Optional[int] = IndexOpts["nlist"],
    nprobe: Optional[int] = IndexOpts["nprobe"],
    storage: Optional[str] = IndexOpts["storage"],
    param: list[str] = IndexOpts["param"],
):
    """Rebuild the search index (e.g. another kind) from stored embeddings, without re-embedding."""
    params = _index_params(
        dict(
            M=M,
            ef_construction=ef_construction,
            ef_search=ef_search,
            n_trees=n_trees,
            search_k=search_k,
            nlist=nlist,
            nprobe=nprobe,
            storage=storage,
        ),
        param,
    )
    with _open(library, model) as lib:
        ui = _RichIndexProgress()
        rep = lib.reindex(index_kind, params or None, progress=ui)
        console.print(
            f"{rep.kind} index rebuilt from stored embeddings: {rep.total} entries, "
            f"{rep.size_bytes / 1e6:.2f} MB, {rep.seconds:.2f}s"
        )


@app.command()
def search(
    query: Optional[str] = typer.Argument(
        None,
        metavar="QUERY",
        show_default=False,
        help="What to look for, in words; 'beach +sunset -people' adds and subtracts "
        "phrases (a hyphen inside a word is just a hyphen; \\- or quotes for a literal "
        "leading - or +: docs/search.md)",
    ),
    add: list[str] = typer.Option([], "--add", metavar="TEXT", help="Also look for this phrase (repeatable)"),
    subtract: list[str] = typer.Option(
        [],
        "--subtract",
        metavar="TEXT",
        help="Push photos like this phrase down; with --ocr, photos whose text holds it go last (repeatable)",
    ),
    image: list[Path] = typer.Option(
        [],
        "--image",
        "-i",
        metavar="PATH",
        help="Find photos similar to this image (repeatable; with a text: both count)",
    ),
    weight: list[float] = typer.Option(
        [],
        "--weight",
        metavar="W",
        help="Weight of an --image, the first --weight for the first --image (default 1; negative: less like it)",
    ),
    k: int = typer.Option(10, "-k", "--top", help="Number of results"),
    threshold: Optional[str] = typer.Option(
        None,
        help="Drop results farther than this angular distance (0..1), 'auto', or for SigLIP models p=PROB (the lowest match probability kept)",
    ),
    library: Optional[Path] = LibraryOpt,
    model: Optional[str] = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON"),
    text_only: bool = typer.Option(
        False, "--text-only", help="Match only the text read in photos (index --ocr); score: share of the words found"
    ),
    semantic_only: bool = typer.Option(
        False, "--semantic-only", help="Match only by meaning (CLIP), not the text read in photos"
    ),
    after: Optional[str] = typer.Option(
        None, help="Taken in or after this period: 2019, 2019-06, 2019-06-15", rich_help_panel="Filters"
    ),
    before: Optional[str] = typer.Option(
        None, help="Taken before this period starts (--before 2019-09: up to Aug 31)", rich_help_panel="Filters"
    ),
    folders: Optional[list[Path]] = typer.Option(
        None, "--in", help="Only files in this folder or below (repeatable)", rich_help_panel="Filters"
    ),
    media: Optional[str] = typer.Option(None, "--type", help="photo or video", rich_help_panel="Filters"),
    camera: Optional[str] = typer.Option(
        None, help="Camera make or model contains this (any case)", rich_help_panel="Filters"
    ),
    near: Optional[str] = typer.Option(
        None, help="Taken near LAT,LON (decimal degrees, from GPS)", rich_help_panel="Filters"
    ),
    within: Optional[float] = typer.Option(
        None, help="With --near: within this many km [default: 10]", rich_help_panel="Filters"
    ),
    sort: str = typer.Option("score", help="score (best first) or date (the results, oldest first)"),
    collapse: bool = typer.Option(
        False, "--collapse", help="Fold near-duplicate photos into the best of them (see `pixquery duplicates`)"
    ),
    collapse_threshold: Optional[float] = typer.Option(
        None,
        "--collapse-threshold",
        metavar="DISTANCE",
        help="--collapse: near-duplicates at most this angular distance apart [default: that of `duplicates`]",
    ),
):
    """Search the library by text, by image, or by both added and subtracted (a text search is answered by `pixquery daemon` when one runs for the library).
    In a library indexed with --ocr, a text query also matches the text in photos; results show the words that matched."""
    from pixquery.searchcmd import search_command

    try:
        search_command(
            query,
            image,
            k,
            threshold,
            library,
            model,
            as_json,
            add=add,
            subtract=subtract,
            weight=weight,
            text_only=text_only,
            semantic_only=semantic_only,
            after=after,
            before=before,
            folders=folders,
            media=media,
            camera=camera,
            near=near,
            within=within,
            sort=sort,
            collapse=collapse,
            collapse_threshold=collapse_threshold,
        )
    except BrokenPipeError:  # `| head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_OK) from None


@app.command(name="daemon")
def daemon_cmd(
    library: Optional[Path] = LibraryOpt,
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="Model name or local model folder [default: the library's, followed when it changes]",
    ),
    idle_exit: float = typer.Option(
        0, "--idle-exit", metavar="SECONDS", help="Exit after this long without a query (0: never)"
    ),
    stop: bool = typer.Option(False, "--stop", help="Stop the daemon running for the library"),
):
    """Keep the text model and index loaded and answer `pixquery search` over a socket in the library folder (optional: searches work without it, slower to start)."""
    from pixquery import daemon
    from pixquery.api import default_library_path

    lib = Path(library).expanduser() if library else default_library_path()
    if stop:
        pid = daemon.stop(lib)
        if pid is None:
            raise PixqueryError(f"no pixquery daemon answers for {lib}")
        err.print(f"stopped the daemon of {escape(str(lib))} (pid {pid})")
        return
    daemon.run(lib, model, idle_exit=idle_exit)


@app.command()
def info(
    library: Optional[Path] = LibraryOpt,
    model: Optional[str] = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON"),
):
    """Show the library: model, index, counts and sizes."""
    with _open(library, model) as lib:
        data = lib.info()
    if as_json:
        print(json.dumps(data, indent=2))
        return
    if _piped():
        _emit(_info_rows(data))
        return
    console.print(f"[bold]library[/]  {escape(data['library'])}")
    console.print(
        f"[bold]model[/]    {escape(data['model'])}"
        + (f"    precision {escape(str(data['precision']))}" if data.get("precision") else "")
    )
    console.print(f"[bold]folders[/]  {escape(', '.join(data['folders']) or '(none)')}")
    console.print(
        f"[bold]images[/]   {data['images']}    videos {data['videos']}    regions/frames {data['detections']}"
    )
    console.print(f"[bold]catalog[/]  {data['catalog_bytes'] / 1e6:.2f} MB")
    ex = data.get("excluded") or {}
    if ex:
        console.print(
            f"[bold]skipped[/]  always: {escape(', '.join(ex['by_default']))}; and what "
            f"{escape(ex['ignore_file'])} files say",
            soft_wrap=True,
        )
        for folder, globs in ex["folders"].items():
            console.print(f"[bold]excluded[/] in {escape(folder)}: {escape(' '.join(globs))}", soft_wrap=True)
    if data.get("store_only"):
        so = data["store_only"]
        console.print(
            f"[bold]store-only[/] {so['vectors']} vectors from {so['shards']} shards in {so['kind']} collection "
            f"{escape(str(so['params'].get('collection')))} at {escape(so['params'].get('uri') or '(the library folder)')}; "
            f"{so['failed']} files had failed in the embed runs (no catalog row per image: see docs/scale.md)",
            soft_wrap=True,
        )
    for m in data["models"]:
        console.print(
            f"\n[bold]{escape(m['name'])}[/] (dim {m['dim']}, {m['embeddings']} embeddings, fingerprint {m['fingerprint']})"
        )
        if m["threshold"] is not None:
            console.print(f"  calibrated threshold (angular distance): {m['threshold']:.4f}")
        idx = m["index"]
        if idx:
            recall = f", measured recall {idx['recall']:.3f}" if idx["recall"] is not None else ""
            console.print(
                f"  index {idx['kind']} {json.dumps(idx['params'])}: {idx['entries']} entries, "
                f"{(idx['size_bytes'] or 0) / 1e6:.2f} MB, built in {idx['build_seconds'] or 0:.2f}s{recall}"
            )


def _info_rows(data: dict) -> list:
    """`pixquery info | ...`: key<TAB>value lines (keys models.N.* for each model in the catalog)."""
    rows = [("library", data["library"]), ("model", data["model"])]
    if data.get("precision"):
        rows.append(("precision", data["precision"]))
    rows += [("folder", f) for f in data["folders"]]
    rows += [
        ("images", data["images"]),
        ("videos", data["videos"]),
        ("regions_frames", data["detections"]),
        ("catalog_bytes", data["catalog_bytes"]),
    ]
    ex = data.get("excluded") or {}
    if ex:
        rows += [("skipped_by_default", s) for s in ex["by_default"]] + [("ignore_file", ex["ignore_file"])]
        rows += [(f"exclude.{folder}", json.dumps(globs)) for folder, globs in ex["folders"].items()]
    if data.get("store_only"):
        so = data["store_only"]
        rows += [
            ("store_only.kind", so["kind"]),
            ("store_only.params", json.dumps(so["params"], sort_keys=True)),
            ("store_only.shards", so["shards"]),
            ("store_only.vectors", so["vectors"]),
            ("store_only.failed", so["failed"]),
        ]
    for n, m in enumerate(data["models"]):
        key = f"models.{n}"
        rows += [
            (f"{key}.name", m["name"]),
            (f"{key}.dim", m["dim"]),
            (f"{key}.embeddings", m["embeddings"]),
            (f"{key}.fingerprint", m["fingerprint"]),
        ]
        if m["threshold"] is not None:
            rows.append((f"{key}.threshold", f"{m['threshold']:.4f}"))
        idx = m["index"]
        if idx:
            rows += [
                (f"{key}.index.kind", idx["kind"]),
                (f"{key}.index.params", json.dumps(idx["params"])),
                (f"{key}.index.entries", idx["entries"]),
                (f"{key}.index.size_bytes", idx["size_bytes"] or 0),
                (f"{key}.index.build_seconds", f"{idx['build_seconds'] or 0:.2f}"),
            ]
            if idx["recall"] is not None:
                rows.append((f"{key}.index.recall", f"{idx['recall']:.3f}"))
    return rows


@app.command()
def models(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON"),
    accept: Optional[str] = typer.Option(
        None, "--accept", metavar="NAME", help="Accept NAME's non-commercial licence (once, for this user)"
    ),
):
    """List the models pixquery knows by name (any local model folder works too): size, licence,
    published accuracy and the speed bench/models.py measured."""
    from pixquery.encoders.registry import DEFAULT_MODEL, accept_licence, known_models

    if accept:
        spec = accept_licence(accept)
        console.print(
            f"accepted for this user: {escape(spec.name)} under {escape(spec.licence)}"
            + ("" if spec.commercial else " (not for commercial use)"),
            soft_wrap=True,
        )
        return
    rows = known_models()
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return

    def num(v, fmt="{:.1f}"):
        return "—" if v is None else fmt.format(v)

    def licence(m):
        if m["commercial"]:
            return m["licence"]
        return m["licence"] + (" [accepted]" if m["licence_accepted"] else f" [non-commercial: --accept {m['name']}]")

    if _piped():
        _emit(
            [
                (
                    "name",
                    "dim",
                    "image_px",
                    "download_mb",
                    "images_per_s",
                    "text_ms",
                    "imagenet_top1",
                    "coco_t2i_r1",
                    "licence",
                    "multilingual",
                    "accuracy_source",
                )
            ]
            + [
                (
                    m["name"] + (" (default)" if m["name"] == DEFAULT_MODEL else ""),
                    m["dim"],
                    m["image_size"],
                    num(m["download_mb"], "{}"),
                    num(m["images_per_s"], "{:.2f}"),
                    num(m["text_ms"]),
                    num(m["imagenet_top1"]),
                    num(m["coco_t2i_r1"]),
                    licence(m),
                    "yes" if m["multilingual"] else "no",
                    m["accuracy_source"],
                )
                for m in rows
            ]
        )
        return
    table = Table(
        "name",
        "dim",
        "px",
        "MB",
        "img/s",
        "text ms",
        "ImageNet %",
        "COCO R@1 %",
        "licence",
        box=None,
        header_style="bold",
    )
    for m in rows:
        name = m["name"] + (" (default)" if m["name"] == DEFAULT_MODEL else "") + (" *" if m["multilingual"] else "")
        table.add_row(
            name,
            str(m["dim"]),
            str(m["image_size"]),
            num(m["download_mb"], "{}"),
            num(m["images_per_s"], "{:.2f}"),
            num(m["text_ms"]),
            num(m["imagenet_top1"]),
            num(m["coco_t2i_r1"]),
            licence(m),
        )
    console.print(table)
    console.print(
        "* multilingual. Speeds: bench/models.py on pixquery's dev machine (2 shared cores, random weights, "
        "bench/results/models.md). Accuracy: published zero-shot ImageNet-1k top-1 and MSCOCO text->image "
        "recall@1 (open_clip's results tables; SigLIP 2 paper); --json names each row's source.",
        soft_wrap=True,
        highlight=False,
    )


@app.command(cls=Command)
def export(
    arch: str = typer.Argument(
        ..., metavar="ARCH", help="open_clip architecture (e.g. ViT-B-32) or a name from `pixquery models`"
    ),
    out: Optional[Path] = typer.Argument(
        None,
        metavar="OUT",
        help="Folder to write the ONNX model to "
        "[default for a name from `pixquery models`: where --model NAME finds it]",
    ),
    pretrained: Optional[str] = typer.Option(None, help="open_clip pretrained tag, e.g. openai or laion2b_s34b_b79k"),
    checkpoint: Optional[Path] = typer.Option(None, help="A local checkpoint file instead of --pretrained"),
    random: bool = typer.Option(False, "--random", help="Untrained random weights (for tests: useless for search)"),
    tokenizer: Optional[Path] = typer.Option(
        None,
        help="A Hugging Face tokenizer folder (tokenizer.json) for models "
        "with one (SigLIP, XLM-R, NLLB), instead of downloading it",
    ),
):
    """Write any open_clip model as an ONNX model folder pixquery can use (needs pixquery[torch]);
    MobileCLIP's re-parameterisable blocks are folded first."""
    from pixquery.encoders.registry import exported_dir, model_spec, require_licence

    spec = model_spec(arch)
    if spec is not None:  # a registry name: its architecture; without OUT, also its weights and folder
        arch = spec.arch
        if out is None:
            pretrained = pretrained or (None if random or checkpoint else spec.pretrained)
            out = exported_dir(spec.name)
        if pretrained == spec.pretrained:
            require_licence(spec)
        else:  # other weights of the same architecture: not that model, not its licence
            spec = spec if random else None
    if out is None:
        raise PixqueryError(
            "give the folder to write: pixquery export ARCH OUT (OUT may be left out only for a "
            "name from `pixquery models`)"
        )
    given = [
        name for name, v in (("--pretrained", pretrained), ("--checkpoint", checkpoint), ("--random", random)) if v
    ]
    if len(given) != 1:
        raise PixqueryError(
            "give the weights: --pretrained TAG (e.g. openai) or --checkpoint FILE, "
            "or --random for untrained random weights" + (f" (not {' and '.join(given)})" if given else "")
        )
    from pixquery.encoders.export import export_open_clip

    path = export_open_clip(
        arch,
        pretrained,
        out,
        checkpoint=checkpoint,
        tokenizer_dir=tokenizer,
        preprocess_from=spec.pretrained if spec is not None else None,
        registry_name=spec.name if spec is not None and not random else None,
    )
    what = " with RANDOM (untrained) weights: search results will be meaningless" if random else ""
    console.print(f"wrote {escape(str(path or out))}{what}; use it with --model {escape(str(out))}", soft_wrap=True)


@app.command()
def demo(
    model: Optional[str] = ModelOpt,
    folder: Optional[Path] = typer.Option(None, help="Photos to use instead of the built-in collection"),
    library: Optional[Path] = typer.Option(None, "--library", "-L", help="Where to keep the demo library"),
):
    """Index a small built-in photo collection and run example queries."""
    from pixquery import demo as demo_mod

    demo_mod.run(model=model, folder=folder, library=library, console=console, progress=_RichIndexProgress())


def _register_plugins() -> None:
    """Commands that live with their feature (eval, serve): registered when that module exists."""
    import importlib

    for module in (
        "pixquery.evaluation.cli",
        "pixquery.server.cli",
        "pixquery.ingest.video_cli",
        "pixquery.ingest.shards_cli",
        "pixquery.duplicates_cli",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # feature not present in this install
            raise
        mod.register(app)


_register_plugins()


def _is_usage_error(e: BaseException) -> bool:
    """A click-style usage error (bad option, unknown command, bad value, no arguments).

    Matched by behaviour, not by class: typer >= 0.22 raises its own vendored click's classes,
    older typer raises click's, and both have `exit_code` and `show()`."""
    return isinstance(getattr(e, "exit_code", None), int) and callable(getattr(e, "show", None))


def _caused_by_interrupt(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _interrupted() -> int:
    err.print(f"[yellow]interrupted{escape(_state['on_interrupt'])}[/]")
    return EXIT_INTERRUPTED


_state = {"on_interrupt": ""}  # what Ctrl-C leaves behind, said by the command that runs


def run(argv: Optional[list[str]] = None) -> int:
    """Run the command line with our own error handling; returns the exit status (see EXIT_CODES)."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:  # bare `pixquery`: the help, and a usage error's status (whichever click typer uses)
        app(args=["--help"], prog_name="pixquery", standalone_mode=False)
        return EXIT_USAGE
    try:
        rc = app(args=args, prog_name="pixquery", standalone_mode=False)
    except PixqueryError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)  # one line, any width
        return EXIT_USAGE
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:  # `pixquery search x | head`: the reader has gone, nothing left to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:
        if _is_usage_error(e):
            e.show()
            return e.exit_code
        if type(e).__name__ == "Abort" or _caused_by_interrupt(e):  # Ctrl-D at a prompt; Ctrl-C inside an import
            return _interrupted()
        raise
    if rc == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130) before we see it
        return _interrupted()
    return rc if isinstance(rc, int) else EXIT_OK


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
