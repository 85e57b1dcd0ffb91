"""milvus-lite serving a data folder on a loopback port, as a separate process: clients talk gRPC to
it as they would to a Milvus cluster. Tests start, kill (-9) and restart it on the same data.

milvus-lite 2.5 (the real Milvus C++ engine) has no `milvus-lite server` command: its `Server`
class knows how to run the bundled binary with an address, and so do we. milvus-lite 3.x (a
Python re-implementation) has `milvus-lite server --port N`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MilvusServer:
    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def _command(self) -> tuple[list[str], dict]:
        db = str(self.data_dir / "served.db")
        try:
            from milvus_lite.server import Server  # 2.5.x
        except ImportError:  # 3.x
            return ([sys.executable, "-m", "milvus_lite", "server", "--data-dir", db,
                     "--host", "127.0.0.1", "--port", str(self.port)], dict(os.environ))
        server = Server(db, f"127.0.0.1:{self.port}")
        env = {**os.environ, "LD_LIBRARY_PATH": f"{server._bin_path}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        return server.args, env

    def start(self, timeout: float = 60) -> "MilvusServer":
        from pymilvus import MilvusClient

        self.data_dir.mkdir(parents=True, exist_ok=True)
        args, env = self._command()
        self.proc = subprocess.Popen(args, env=env, cwd=str(self.data_dir), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while True:
            assert self.proc.poll() is None, f"milvus-lite server exited with {self.proc.returncode}"
            try:
                client = MilvusClient(uri=self.uri, timeout=2)
                client.list_collections()
                client.close()
                return self
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)

    def collections(self) -> list[str]:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri, timeout=10)
        try:
            return sorted(client.list_collections())
        finally:
            client.close()

    def kill(self) -> None:
        """kill -9: no chance to flush."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
