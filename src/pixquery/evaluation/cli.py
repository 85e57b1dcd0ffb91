"""`pixquery eval`: the study's comparison of models, thresholds and indexes on labelled photos.

The main CLI calls `register(app)`; `python -m pixquery.evaluation.cli` runs the command alone.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
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

from pixquery.errors import PixqueryError

DEFAULT_MODELS = "ViT-B-32"


class RateColumn(ProgressColumn):
    """items/s of a task (Rich's own speed column is for bytes)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("    -/s" if speed is None else f"{speed:7.1f}/s", style="progress.data.speed")


def _console() -> Console:
    console = Console(stderr=True, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = max(console.width, 120)  # logs: room for the progress columns
    return console


def parse_index_params(specs: list[str] | None) -> dict[str, list[dict]]:
    """'hnsw:ef_search=16,32,64' (repeatable; several parameters separated by ';' form their
    cartesian product) -> {"hnsw": [{"ef_search": 16}, ...]}."""
    out: dict[str, list[dict]] = {}
    for spec in specs or []:
        kind, sep, rest = spec.partition(":")
        if not sep or not kind.strip() or not rest.strip():
            raise PixqueryError(
                f"--index-param {spec!r}: expected KIND:NAME=V1,V2[;NAME=...], e.g. hnsw:ef_search=16,64"
            )
        names, values = [], []
        for part in rest.split(";"):
            name, eq, vals = part.partition("=")
            if not eq or not name.strip() or not vals.strip():
                raise PixqueryError(f"--index-param {spec!r}: {part!r} is not NAME=V1,V2")
            names.append(name.strip())
            values.append([_value(v) for v in vals.split(",") if v.strip()])
        out.setdefault(kind.strip(), []).extend(dict(zip(names, combo)) for combo in itertools.product(*values))
    return out


def _value(s: str):
    s = s.strip()
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(s.lower(), s)


def _index_kinds(spec: str, params: dict) -> list[str]:
    from pixquery.indexes import kinds

    spec = spec.strip()
    if spec in ("", "none"):
        return []
    known = kinds()
    wanted = known if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [k for k in wanted + list(params) if k not in known]
    if unknown:
        raise PixqueryError(f"unknown index kind {unknown[0]!r}; known kinds: {', '.join(known)}")
    return wanted + [k for k in params if k not in wanted]


def run_eval(
    dataset: Path,
    models: str = DEFAULT_MODELS,
    templates: str = "photo",
    out: Path = Path("pixquery-eval"),
    limit: Optional[int] = None,
    indexes: str = "all",
    index_param: Optional[list[str]] = None,
    index_k: int = 10,
    index_queries: int = 200,
    library: Optional[Path] = None,
    store: bool = True,
    precision: str = "fp32",
    batch_size: int = 32,
    workers: Optional[int] = None,
    dataset_kind: str = "auto",
    seed: int = 0,
    plots: bool = True,
    console: Console | None = None,
) -> dict:
    """The command's body, callable from Python; returns the report dict."""
    from pixquery.evaluation.datasets import load_dataset, resolve_templates
    from pixquery.evaluation.report import model_label, write_report
    from pixquery.evaluation.runners import EvalConfig, evaluate, store_threshold

    console = console or _console()
    t_start = time.perf_counter()
    ds = load_dataset(dataset, kind=dataset_kind).subset(limit, seed=seed)
    tpls = resolve_templates(templates)
    model_specs = [m.strip() for m in models.split(",") if m.strip()]
    if not model_specs:
        raise PixqueryError("--models is empty: give one or more model names or folders, comma-separated")
    params = parse_index_params(index_param)
    config = EvalConfig(
        templates=tpls,
        indexes=_index_kinds(indexes, params),
        index_params=params,
        index_k=index_k,
        index_queries=index_queries,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
    )
    s = ds.summary()
    console.print(
        f"[bold]{escape(s['name'])}[/]: {s['items']} images, {s['classes']} classes ({s['kind']}); "
        f"models: {', '.join(model_specs)}; prompts: {', '.join(t.name for t in tpls)}"
    )
    for n in ds.notes:
        console.print(f"[yellow]note:[/] {n}")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        current = {"model": ""}

        def factory(label: str, total: int):
            task = progress.add_task(f"{current['model']} {label}".strip(), total=max(total, 1))
            return lambda done: progress.update(task, completed=done)

        results = []
        for spec in model_specs:  # one at a time, so that each progress bar names its model
            current["model"] = model_label({"spec": spec})
            report = evaluate(ds, [spec], config, progress=factory, precision=precision)
            results.extend(report["models"])
        report["models"] = results

    target = _threshold_target(library) if store else None
    for m in report["models"]:
        if m["images"]["failed_count"]:
            first = m["images"]["failed"][0]
            console.print(
                f"[yellow]{model_label(m)}: {m['images']['failed_count']} image(s) skipped[/] "
                f"(e.g. {first['path']}: {first['reason']})"
            )
        if target is not None:
            run = m["runs"][0]
            thr = run["best_threshold"]["angular"]
            src = f"pixquery eval {ds.name} prompts={run['templates']} F1={run['best_threshold']['f1']:.3f}"
            cat = store_threshold(target, m["name"], m["fingerprint"], thr, source=src)
            m["stored_threshold"] = {"threshold": thr, "catalog": str(cat), "templates": run["templates"]}
            console.print(f"stored threshold {thr:.4f} (angular) for {m['name']} in {cat}", soft_wrap=True)

    report["command"] = " ".join(sys.argv)
    report["wall_seconds"] = time.perf_counter() - t_start
    files = write_report(report, out, with_plots=plots)
    _print_summary(report, console)
    console.print(f"report: {Path(out) / 'report.md'} ({len(files)} files, {report['wall_seconds']:.0f} s)")
    return report


def _threshold_target(library: Optional[Path]) -> Optional[Path]:
    """Where to store thresholds: the given library, else the default one if it already exists."""
    from pixquery.evaluation.runners import catalog_path

    if library is not None:
        return Path(library)
    default = catalog_path(None)
    return default if default.is_file() else None


def _print_summary(report: dict, console: Console) -> None:
    from pixquery.evaluation.report import model_label

    t = Table(title="zero-shot and threshold summary")
    for col in ("model", "prompts", "top-1", "top-5", "AUC", "best thr (angular)", "F1", "img/s", "dim"):
        t.add_column(col, justify="left" if col in ("model", "prompts") else "right")
    for m in report["models"]:
        for r in m["runs"]:
            auc = r["auc"]
            t.add_row(
                model_label(m),
                r["templates"],
                f"{r['top1']:.3f}",
                f"{r['top5']:.3f}",
                "n/a" if auc != auc else f"{auc:.3f}",
                f"{r['best_threshold']['angular']:.4f}",
                f"{r['best_threshold']['f1']:.3f}",
                f"{m['images']['images_per_s'] or 0:.1f}",
                str(m["dim"]),
            )
    console.print(t)


def register(app: typer.Typer) -> None:
    """Add the `eval` command to the main CLI."""

    from pixquery._cli_usage import Command

    @app.command("eval", cls=Command)
    def eval_command(
        dataset: Path = typer.Argument(
            ...,
            metavar="DATASET",
            help="Labelled photos: a folder with labels.csv (+ classes.csv), "
            "a folder per class, a CSV of path,label[,label...], or an ImageNet DET "
            "folder with XML annotations.",
        ),
        models: str = typer.Option(
            DEFAULT_MODELS, "--models", "-m", help="Comma-separated model names or model folders, e.g. ViT-B-32,RN50."
        ),
        templates: str = typer.Option(
            "photo",
            "--templates",
            "-t",
            help="Prompt templates: '{}', 'photo', 'ensemble' (CLIP's 80) or a file; "
            "comma-separate several to compare them.",
        ),
        out: Path = typer.Option(Path("pixquery-eval"), "--out", "-o", help="Report folder (JSON, Markdown, PNG)."),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Use a random sample of N images."),
        indexes: str = typer.Option(
            "all", "--indexes", help="Index kinds to measure, comma-separated; 'all' or 'none'."
        ),
        index_param: Optional[list[str]] = typer.Option(
            None,
            "--index-param",
            metavar="SPEC",
            help="Sweep index parameters: KIND:NAME=V1,V2[;NAME=...] (repeatable), e.g. hnsw:ef_search=16,64.",
        ),
        index_k: int = typer.Option(10, "--index-k", help="k for index recall."),
        index_queries: int = typer.Option(200, "--index-queries", help="Single queries per index."),
        library: Optional[Path] = typer.Option(
            None,
            "--library",
            "-L",
            help="Store each model's best threshold in this library's catalog "
            "(used by `pixquery search --threshold auto`); default: the default "
            "library, when it exists.",
        ),
        store: bool = typer.Option(True, "--store/--no-store", help="Store the best thresholds in the library."),
        precision: str = typer.Option("fp32", "--precision", help="Encoder precision (fp32 or int8)."),
        batch_size: int = typer.Option(32, "--batch-size", help="Images per encoder batch."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: cores - 1)."),
        dataset_kind: str = typer.Option(
            "auto", "--dataset-kind", help="auto, labels-csv, csv, folder or imagenet-det."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for --limit sampling and index queries."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    ) -> None:
        """Evaluate models on labelled photos: zero-shot accuracy, speed, ROC/F1 thresholds, indexes."""
        console = _console()
        try:
            report = run_eval(
                dataset,
                models=models,
                templates=templates,
                out=out,
                limit=limit,
                indexes=indexes,
                index_param=index_param,
                index_k=index_k,
                index_queries=index_queries,
                library=library,
                store=store,
                precision=precision,
                batch_size=batch_size,
                workers=workers,
                dataset_kind=dataset_kind,
                seed=seed,
                plots=plots,
                console=console,
            )
        except PixqueryError as e:
            console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None  # a user error, as everywhere in pixquery
        # 1: some images could not be read (the report covers the rest), as `pixquery index`
        raise typer.Exit(1 if any(m["images"]["failed_count"] for m in report["models"]) else 0)


def main() -> None:
    app = typer.Typer(add_completion=False, no_args_is_help=True)
    register(app)

    @app.callback()
    def _root() -> None:
        """pixquery evaluation."""

    app()


if __name__ == "__main__":
    main()
