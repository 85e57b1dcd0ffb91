"""Helpers for the server tests: a small indexed library and a real `pixquery serve` process.

Not a test module (it defines no tests); the server, security and browser tests import it.
Each server runs as a subprocess on 127.0.0.1 with a free port, exactly as a user starts it
(`python -m pixquery.server` is `pixquery serve`), and is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from photos import make_photos

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_library(root: Path, model: Path, n: int = 24) -> tuple[Path, Path]:
    """(library folder, photo folder) with n indexed photos."""
    from pixquery.api import Library

    photos = root / "photos"
    make_photos(photos, n)
    lib_path = root / "library"
    with Library.open(lib_path, model=str(model)) as lib:
        lib.index([str(photos)], workers=1)
    return lib_path, photos


def index_again(lib_path: Path, model: Path, folders=None) -> None:
    from pixquery.api import Library

    with Library.open(lib_path, model=str(model)) as lib:
        lib.index([str(f) for f in folders] if folders else None, workers=1)


class ServerProcess:
    def __init__(self, proc: subprocess.Popen, url: str, log_path: Path, token: str | None):
        self.proc, self.url, self.log_path, self.token = proc, url, log_path, token

    def client(self, token: str | None = "default", **kw) -> httpx.Client:
        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_server(
    lib_path: Path, model: Path, log_path: Path, token: str | None = TOKEN, extra=(), timeout: float = 90
) -> ServerProcess:
    """Start `pixquery serve` and wait until it answers /api/health (or fail with its log)."""
    last_error = None
    for _attempt in range(3):  # a free port can be taken between free_port() and the bind
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "pixquery.server",
            "--library",
            str(lib_path),
            "--model",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ]
        if token:
            args += ["--token", token]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        env.pop("PIXQUERY_TOKEN", None)
        with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        url = f"http://127.0.0.1:{port}"
        server = ServerProcess(proc, url, log_path, token)
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_error = f"server exited with {proc.returncode}:\n{server.log()}"
                break
            try:
                if httpx.get(url + "/api/health", headers=headers, timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            stop_server(server)
            raise RuntimeError(f"server did not start within {timeout}s:\n{server.log()}")
        if not any(s in (last_error or "").lower() for s in ("address already in use", "is in use")):
            break
    raise RuntimeError(last_error)


def stop_server(server: ServerProcess) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=5)


@contextmanager
def running_server(lib_path: Path, model: Path, log_path: Path, **kw):
    server = start_server(lib_path, model, log_path, **kw)
    try:
        yield server
    finally:
        stop_server(server)
        log = server.log()
        # A traceback in the server's log means some request hit a bug (a 500), even if the
        # test that sent it looked only at the status code.
        assert "Traceback" not in log, f"the server logged a traceback:\n{log}"
