"""Named crash points for the crash-consistency tests: `PIXQUERY_FAILPOINT=name[:n]` makes the
process kill -9 itself the n-th time (default 1st) it reaches `hit(name)`. Unset: a dict lookup."""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def hit(name: str) -> None:
    spec = os.environ.get("PIXQUERY_FAILPOINT")
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
