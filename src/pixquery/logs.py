"""Where pixquery's log goes when it runs as a command: stderr, one line a record.

Every module logs to `logging.getLogger(__name__)` (all under the `pixquery` logger): index
rebuilds and why, fallbacks (GPU to CPU, an optimised model copy not used), files skipped. As a
library pixquery adds no handler (the application decides); the CLI calls `configure` with the
level its `-v` / `--log-level` options (or $PIXQUERY_LOG_LEVEL) ask for: warnings by default,
-v info, -vv debug.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMAT = "%(levelname)s %(name)s: %(message)s"
_HANDLER_NAME = "pixquery-stderr"


def level_for(verbose: int = 0, log_level: str | None = None) -> int:
    """-v counts, else --log-level / $PIXQUERY_LOG_LEVEL, else warnings."""
    if verbose:
        return logging.DEBUG if verbose > 1 else logging.INFO
    name = (log_level or os.environ.get("PIXQUERY_LOG_LEVEL") or "warning").lower()
    if name not in LEVELS:
        from pixquery.errors import PixqueryError

        raise PixqueryError(f"log level must be one of {', '.join(LEVELS)}, not {name!r}")
    return int(getattr(logging, name.upper()))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is when a record comes (a test runner may swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure(level: int) -> None:
    """Send the `pixquery` loggers' records at `level` and above to stderr (once; a second call
    only changes the level). Records still propagate: an application's own handlers see them."""
    logger = logging.getLogger("pixquery")
    logger.setLevel(level)
    if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        handler = _StderrHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
