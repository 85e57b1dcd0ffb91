"""Runs the real `pixquery` command in a subprocess (the same entry point a user runs)."""

from __future__ import annotations

import os
import subprocess
import sys


def pixquery(*args, env=None, timeout=300, prefix=(), **kw) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", COLUMNS="200", NO_COLOR="1")
    full_env.update(env or {})
    cmd = [*prefix, sys.executable, "-m", "pixquery.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, **kw)
