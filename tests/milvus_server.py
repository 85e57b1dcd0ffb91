"""milvus-lite serving a data folder on a loopback port, as a separate process: clients talk gRPC to
it as they would to a Milvus cluster. Tests start, kill (-9) and restart it on the same data.

milvus-lite 2.5 (the real Milvus C++ engine) has no `milvus-lite server` command: its `Server`
class knows how to run the bundled binary with an address, and so do we. milvus-lite 3.x (a
Python re-implementation) has `milvus-lite server --port N`.
"""

from __future__ import annotations

import os
import shutil
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
            return (
                [
                    sys.executable,
                    "-m",
                    "milvus_lite",
                    "server",
                    "--data-dir",
                    db,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                dict(os.environ),
            )
        server = Server(db, f"127.0.0.1:{self.port}")
        env = {**os.environ, "LD_LIBRARY_PATH": f"{server._bin_path}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        return server.args, env

    def start(self, timeout: float = 60) -> MilvusServer:
        from pymilvus import MilvusClient

        self.data_dir.mkdir(parents=True, exist_ok=True)
        args, env = self._command()
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=str(self.data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
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


class MilvusStandalone:
    """A real Milvus standalone server (the `milvus` package: the Milvus binary with its own etcd and
    local storage, every index type built for real), on free loopback ports, data under `data_dir`.
    Starts in ~20 s; one per test module."""

    def __init__(self, data_dir: Path):
        from milvus import MilvusServer as _Standalone

        self.data_dir = Path(data_dir)
        self._server = _Standalone()
        self._server.set_base_dir(str(self.data_dir))
        self.uri = ""
        # The embedded etcd's peer port is 2380 unless an etcd config file says otherwise, so a
        # second server on the machine (another test run, a benchmark) could not start: give it one.
        client, peer = free_port(), free_port()
        self._server.config.update(etcd_port=client)
        etcd_yaml = self.data_dir / "embedEtcd.yaml"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        etcd_yaml.write_text(
            f"name: pixquery-test\n"
            f"listen-client-urls: http://127.0.0.1:{client}\nadvertise-client-urls: http://127.0.0.1:{client}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: pixquery-test=http://127.0.0.1:{peer}\n"
        )
        template = self._server.config.template_text
        marker = "  use:\n    embed: true"
        assert marker in template, "the milvus package's config template changed: update tests/milvus_server.py"
        template = template.replace(marker, f"  config:\n    path: {etcd_yaml}\n{marker}", 1)
        # query nodes load DISKANN indexes only with enableDisk (index nodes build them by default)
        disk = "  enableDisk: false # enable querynode load disk index"
        assert disk in template, "the milvus package's config template changed: update tests/milvus_server.py"
        self._server.config.template_text = template.replace(
            disk, "  enableDisk: true # enable querynode load disk index", 1
        )

    def start(self) -> MilvusStandalone:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The package unpacks its ~250 MB binary into <data_dir>/bin on every start unless an md5 file
        # there says it is current: one unpacked copy beside the venv serves every server of the run.
        shared_bin = Path(sys.prefix) / "var" / "pixquery-tests" / "milvus-standalone-bin"
        shared_bin.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "bin").exists():
            (self.data_dir / "bin").symlink_to(shared_bin, target_is_directory=True)
        cwd = os.getcwd()  # the package's start() chdirs into the data folder and doesn't go back if it fails
        try:
            self._server.start()  # picks free ports for the proxy, etcd and every coordinator, waits for /healthz
        except Exception as e:
            log = self.data_dir / "logs" / "milvus-stderr.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
            self._server.stop()
            raise RuntimeError(f"Milvus standalone did not start in {self.data_dir}: {e!r}\n{tail}") from e
        finally:
            os.chdir(cwd)
        self.uri = f"http://127.0.0.1:{self._server.listen_port}"
        return self

    def collections(self) -> list[str]:
        return MilvusServer.collections(self)  # type: ignore[arg-type]

    def stop(self) -> None:
        self._server.stop()
        # etcd and rocksmq preallocate ~270 MB per server: free it now, not when pytest prunes tmp.
        shutil.rmtree(self.data_dir / "data", ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
