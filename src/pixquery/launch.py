"""The `pixquery` command's entry point: a plain text search starts without typer.

`pixquery search "a dog" [-k N] [-L LIB] [-m MODEL] [--threshold T] [--json] [--add TEXT]
[--subtract TEXT]` is parsed here, by hand, and run by pixquery.searchcmd (the same code the typer
command runs), so that a query
answered by a daemon imports only the standard library, and one searched in process skips
typer's ~50 ms of imports. Anything else (another command, --help, --image, an option this does not
know, a value it cannot read) goes to the full command line, pixquery.cli, unchanged: there typer
parses it and says what is wrong.
"""

from __future__ import annotations

import os
import sys

# option -> (destination, takes a value); the `search` options of pixquery.cli (test_cli checks that
# both parsers read the same arguments the same way)
_SEARCH_OPTIONS = {
    "-k": ("k", True),
    "--top": ("k", True),
    "-L": ("library", True),
    "--library": ("library", True),
    "-m": ("model", True),
    "--model": ("model", True),
    "--threshold": ("threshold", True),
    "--json": ("as_json", False),
    "--add": ("add", True),
    "--subtract": ("subtract", True),  # repeatable: a list
    "--text-only": ("text_only", False),
    "--semantic-only": ("semantic_only", False),
}
_REPEATABLE = {"add", "subtract"}


def parse_search(args: list[str]) -> dict | None:
    """The arguments after `search` as search_command's keywords, or None for the full CLI."""
    out: dict = {
        "query": None,
        "add": [],
        "subtract": [],
        "image": [],
        "weight": [],
        "k": 10,
        "threshold": None,
        "library": None,
        "model": None,
        "as_json": False,
        "text_only": False,
        "semantic_only": False,
        # the filter options (pixquery.cli) are left to the full command line: these are their defaults
        "after": None,
        "before": None,
        "folders": (),
        "media": None,
        "camera": None,
        "near": None,
        "within": None,
        "sort": "score",
        "collapse": False,
        "collapse_threshold": None,
    }  # --collapse is left to the full CLI
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if (
            name not in _SEARCH_OPTIONS
            and not arg.startswith("--")
            and arg[:2] in _SEARCH_OPTIONS
            and _SEARCH_OPTIONS[arg[:2]][1]
        ):
            name, eq, value = arg[:2], "=", arg[2:]  # -k5, -L/path (click's short form)
        if name not in _SEARCH_OPTIONS:
            return None
        dest, takes = _SEARCH_OPTIONS[name]
        if not takes:
            if eq:
                return None
            out[dest] = True
            continue
        if not eq:
            if i >= len(args):
                return None
            value = args[i]
            i += 1
        if dest in _REPEATABLE:
            out[dest].append(value)
        else:
            out[dest] = value
    if len(positional) != 1:
        return None
    out["query"] = positional[0]
    try:
        out["k"] = int(out["k"])
    except ValueError:
        return None
    if out["library"] is None:
        out["library"] = os.environ.get("PIXQUERY_LIBRARY") or None  # typer's envvar for -L
    if out["library"] is not None:
        from pathlib import Path

        out["library"] = Path(out["library"])
    return out


def _error(message: str) -> int:
    from pixquery.searchcmd import say

    try:
        from rich.markup import escape
    except ImportError:  # pragma: no cover - rich comes with pixquery
        escape = str
    say(
        f"[bold red]error:[/] {escape(message)}", f"error: {message}", highlight=False, soft_wrap=True
    )  # as pixquery.cli.run
    return 2


def quick_search(args: list[str]) -> int | None:
    """Run `pixquery search ARGS` without typer; None when the full CLI must handle it."""
    kw = parse_search(args)
    if kw is None:
        return None
    from pixquery.errors import PixqueryError
    from pixquery.searchcmd import search_command

    try:
        search_command(**kw)
    except PixqueryError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        return _error_interrupted()
    except BrokenPipeError:  # `pixquery search x | head`: the reader has gone, nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def _error_interrupted() -> int:
    from pixquery.searchcmd import say

    say("[yellow]interrupted[/]", "interrupted")
    return 130


def run(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["search"] and not os.environ.get("PIXQUERY_FULL_CLI"):
        rc = quick_search(args[1:])
        if rc is not None:
            return rc
    from pixquery.cli import run as full

    return full(args)


def main() -> None:
    sys.exit(run())
