"""`pixquery search`, shared by the full command line (pixquery.cli, typer) and the quick entry
(pixquery.launch), which runs a plain text search without importing typer.

A text search asks the library's query daemon first (pixquery.daemon, when one is running) and
otherwise searches in this process, loading the text tower from its pre-optimised copy without
pre-packing its weights (one query: ~10 ms to a session instead of ~0.5 s). Output is the same
either way. Heavy modules (numpy, ONNX Runtime, the catalog, rich) are imported only by the path
that needs them: rich only for a terminal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from pixquery.errors import PixqueryError


def piped(stream=None) -> bool:
    """The stream (default stdout) is a pipe or a file, not a terminal: plain lines for programs."""
    try:
        return not os.isatty((stream or sys.stdout).fileno())
    except (AttributeError, OSError, ValueError):
        return True


def _styled(stream) -> bool:
    """Whether rich would style this stream: a terminal, or colour forced."""
    return not piped(stream) or bool(os.environ.get("FORCE_COLOR")) or bool(os.environ.get("TTY_COMPATIBLE"))


def field(value) -> str:
    """One tab-separated field: never split by a tab or a newline inside it."""
    return str(value).replace("\t", "\\t").replace("\n", "\\n")


def write_rows(rows) -> None:
    """Tab-separated lines on stdout: no wrapping at any width, no padding, no colour.
    Raises BrokenPipeError when the reader has gone (`| head`)."""
    for row in rows:
        sys.stdout.write("\t".join(field(v) for v in row) + "\n")
    sys.stdout.flush()


def say(markup: str, plain: str, **rich_options) -> None:
    """A line on stderr: through rich (styles, wrapping) on a terminal, else the plain text as is."""
    if _styled(sys.stderr):
        from rich.console import Console

        Console(stderr=True).print(markup, **rich_options)
    else:
        sys.stderr.write(plain + "\n")
        sys.stderr.flush()


def warn_random(model_name: str) -> None:
    """A random-weight test model (scripts/make_tiny_models.py, `export --random`) ranks photos
    meaninglessly: every command that uses one says so, on stderr."""
    text = f"warning: {model_name} is a random-weight test model: its rankings are meaningless"
    if _styled(sys.stderr):
        from rich.markup import escape

        say(
            f"[yellow]warning: {escape(model_name)} is a random-weight test model: its rankings are meaningless[/]",
            text,
        )
    else:
        say(text, text)


class Found:
    """What `search` prints: results as dicts (Result.to_dict()), their locations as the CLI writes
    them, the threshold and how many it dropped. From a daemon's answer as from Library.search."""

    def __init__(self, results: list, locations: list, threshold, dropped: int):
        self.results, self.locations, self.threshold, self.dropped = results, locations, threshold, dropped

    @classmethod
    def of(cls, results) -> Found:
        from pixquery.ingest.video import describe_location

        # where: path @ 00:12:31 (00:12:25-00:12:40) [box x0,y0,x1,y1]
        return cls(
            [r.to_dict() for r in results], [describe_location(r) for r in results], results.threshold, results.dropped
        )


def _from_daemon(query: str, k: int, threshold, library, model):
    """(Found, random_weights, model name, ms) from the library's daemon, or None. Only the
    standard library is imported on this path."""
    lib = Path(library).expanduser() if library else _default_library()
    inside = os.path.join(os.path.realpath(lib), "query.sock")  # daemon.socket_path's usual answer
    if len(os.fsencode(inside)) <= 100 and not os.path.lexists(inside):
        return None  # no daemon: not even its module is imported
    from pixquery import daemon

    if not os.path.lexists(daemon.socket_path(lib)):
        return None
    t0 = time.perf_counter()
    answer = daemon.ask(
        lib, {"op": "search", "query": query, "k": k, "threshold": threshold, "model": daemon.normalize_model(model)}
    )
    ms = (time.perf_counter() - t0) * 1000
    if not answer:
        return None
    if answer.get("ok"):
        try:
            found = Found(
                list(answer["results"]),
                [str(x) for x in answer["locations"]],
                answer["threshold"],
                int(answer["dropped"]),
            )
            if len(found.results) != len(found.locations) or not all(isinstance(r, dict) for r in found.results):
                return None
            return found, bool(answer.get("random_weights")), str(answer.get("model")), ms
        except (KeyError, TypeError, ValueError):
            return None
    if answer.get("user_error") and isinstance(answer.get("error"), str):
        if answer.get("random_weights") and answer.get("model"):
            warn_random(str(answer["model"]))  # as the search in process says it, before the error
        raise PixqueryError(answer["error"])
    return None


def _default_library() -> Path:
    # pixquery.api.default_library_path without importing pixquery.api (numpy, the catalog)
    if os.environ.get("PIXQUERY_LIBRARY"):
        return Path(os.environ["PIXQUERY_LIBRARY"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "pixquery"


def _in_process(
    query,
    k,
    threshold,
    library,
    model,
    as_json,
    text_only=False,
    semantic_only=False,
    filters=None,
    sort="score",
    collapse=False,
):
    from pixquery.api import Library

    with Library.open(library, model=model, create=False) as lib:
        if not text_only:  # --text-only loads no model
            enc = lib.encoder
            if hasattr(enc, "prepack"):
                enc.prepack = False  # one query, then exit: re-laying the weights costs more than it saves
            if not as_json and getattr(enc, "random_weights", False):
                warn_random(lib.model_name)
        t0 = time.perf_counter()
        results = lib.search(
            query,
            k=k,
            threshold=threshold,
            text_only=text_only,
            semantic_only=semantic_only,
            sort=sort,
            collapse=collapse,
            **(filters or {}),
        )
        ms = (time.perf_counter() - t0) * 1000
        return Found.of(results), ms


def matched_text(result: dict) -> str:
    """The lines of text that matched a query, as the CLI prints them: '"RE16 TGK" [box 0.04,0.13,0.48,0.22]; ...'."""
    return "; ".join(
        f'"{m["text"]}" [box ' + ",".join(f"{v:.2f}" for v in m["box"]) + "]" for m in result.get("matched") or []
    )


def _combined(query: str | None, add, subtract, images, weights):
    """The Query of the command line's parts (pixquery.query): the inline syntax of QUERY, then
    --add, --subtract, and each --image with its --weight."""
    from pixquery.query import Query, parse_inline

    if len(weights) > len(images):
        raise PixqueryError(
            f"{len(weights)} --weight for {len(images)} --image: each --weight is the "
            "weight of one --image, the first --weight for the first --image"
        )
    q = parse_inline(query) if query is not None else Query()
    for text in add:
        q = q.plus(text)
    for text in subtract:
        q = q.minus(text)
    for n, path in enumerate(images):
        q = q.plus_image(path, weights[n] if n < len(weights) else 1.0)
    return q


def search_command(
    query: str | None,
    image,
    k: int,
    threshold: str | None,
    library: Path | None,
    model: str | None,
    as_json: bool,
    add=(),
    subtract=(),
    weight=(),
    text_only: bool = False,
    semantic_only: bool = False,
    *,
    sort: str = "score",
    collapse: bool = False,
    collapse_threshold: float | None = None,
    **filters,
) -> None:
    """Search and print (the body of `pixquery search`); raises PixqueryError for a user error.
    image: a path or a list of paths (--image, repeatable), weight: their --weight values.
    text_only / semantic_only: match only the text read in photos (OCR) / only by meaning.
    `filters`: Library.search's filter keywords (after, before, folders, media, camera, near, within).
    collapse: fold near-duplicates (Library.search's collapse=, at collapse_threshold when given);
    answered in this process, not by the daemon, which does not collapse."""
    images = [] if image is None else [image] if isinstance(image, (str, Path)) else list(image)
    if query is None and not (images or add or subtract):
        raise PixqueryError("give a text query or --image PATH")
    if collapse_threshold is not None and not collapse:
        raise PixqueryError("--collapse-threshold goes with --collapse")
    if collapse and collapse_threshold is not None:
        collapse = collapse_threshold
    combined = _combined(query, add, subtract, images, list(weight))
    filters = {
        key: [str(f) for f in v] if key == "folders" else v for key, v in filters.items() if v not in (None, "", [], ())
    }
    filtered = bool(filters) or sort != "score"  # the daemon answers plain searches only
    # The daemon answers text-only queries: the combined one travels in the inline syntax. It
    # searches both sides (semantic and, with OCR, text): one side alone is searched here.
    inline = query if query is not None and len(combined) == 1 and not images else combined.to_inline()
    plain = inline is not None and not text_only and not semantic_only and not filtered and collapse is False
    got = _from_daemon(inline, k, threshold, library, model) if plain else None
    if got is not None:
        found, random_weights, model_name, ms = got
        if random_weights and not as_json:
            warn_random(model_name)
    else:
        found, ms = _in_process(
            combined, k, threshold, library, model, as_json, text_only, semantic_only, filters, sort, collapse
        )
    if as_json:
        print(
            json.dumps(
                {
                    "query": query,
                    "image": str(images[0]) if images else None,
                    "parts": combined.to_dicts(),
                    "threshold": found.threshold,
                    "dropped_by_threshold": found.dropped,
                    "filters": filters or None,
                    "sort": sort,
                    "results": found.results,
                },
                indent=2,
            )
        )
        return
    rows = [
        (
            r["rank"],
            f"{r['score']:.4f}",
            f"{r['distance']:.4f}",
            where + (f" (+{len(r['duplicates'])} near-duplicates)" if r.get("duplicates") else ""),
        )
        for r, where in zip(found.results, found.locations)
    ]
    texts = [matched_text(r) for r in found.results]
    if filtered:  # a filtered or date-sorted search shows when each was taken (after the path: cut -f4 stays the path)
        rows = [(*row, r.get("taken", "").replace("T", " ")) for row, r in zip(rows, found.results)]
    if piped():  # one result a line: rank, score, distance, location (`| cut -f4`), [taken], and matched text if any
        write_rows(row + ((text,) if text else ()) for row, text in zip(rows, texts))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None)
        for col, just in (("#", "right"), ("score", "right"), ("distance", "right")) + (
            (("taken", "left"),) if filtered else ()
        ):
            table.add_column(col, justify=just, no_wrap=True)
        table.add_column("path", overflow="fold")  # a path is never cut short: it is the answer
        if any(texts):
            table.add_column("text matched", overflow="fold")
        for row, text in zip(rows, texts):
            table.add_row(*map(str, row[:3] + row[4:]), escape(row[3]), *([escape(text)] if any(texts) else []))
        Console().print(table)
    note = f"{len(found.results)} results in {ms:.0f} ms"
    if found.threshold is not None:
        note += f"; {found.dropped} dropped by the threshold {found.threshold:.4f}"
    say(f"[dim]{note}[/dim]", note)
