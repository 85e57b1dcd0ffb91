"""Start, restart and stop a Milvus standalone server for bench/indexes.py --kinds milvus --milvus-server.

The PyPI package `milvus` (2.3.x, "embedded Milvus") ships the real standalone binary (proxy,
coordinators, query / data / index nodes in one process, with an embedded etcd and local storage)
behind a `milvus-server` script that writes its milvus.yaml and starts `<data>/bin/milvus run
standalone`. Two things keep two such servers on one machine apart:

* every `--*-port` option gets a free port (the script falls back to Milvus's default ports for
  those not given);
* the embedded etcd listens on etcd's default client and peer ports (2379 / 2380) whatever
  `--etcd-port` says (that option only tells Milvus where to connect), so the server gets an
  embedded-etcd config file (env ETCD_CONFIG_PATH, read by Milvus's paramtable as etcd.config.path)
  that moves both to free ports.

The metrics / health port is the one the script picks itself (the first free one from 9091).

`pid` is the `milvus` process (the script's child), whose RSS is the server's memory.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PORT_OPTIONS = (
    "proxy",
    "etcd",
    "root-coord",
    "proxy-internal",
    "query-coord",
    "query-node",
    "index-coord",
    "index-node",
    "data-coord",
    "data-node",
)


def free_ports(n: int, lo: int = 42000, hi: int = 60000) -> list[int]:
    """n consecutive-ish free TCP ports on 127.0.0.1 and all interfaces (bound and released)."""
    out: list[int] = []
    start = random.randrange(lo, hi - 200)
    for p in range(start, start + 200):
        ok = True
        for host in ("127.0.0.1", "0.0.0.0"):
            s = socket.socket()
            try:
                s.bind((host, p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            out.append(p)
            if len(out) == n:
                return out
    raise RuntimeError("no free ports")


def _children(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def pid_listening(port: int) -> int | None:
    """The process listening on TCP `port` (from /proc/net/tcp{,6} and the processes' sockets)."""
    inodes = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in Path(f).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
        except OSError:
            pass
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            for fd in (d / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(d.name)
        except OSError:
            continue
    return None


def proc_kb(pid: int | None, key: str) -> int:
    """VmRSS / VmHWM (peak RSS) of a process in kB (0 if gone)."""
    if not pid:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Standalone:
    """One Milvus standalone server in a private data folder, on free ports."""

    def __init__(
        self,
        server_bin: str | Path,
        data_dir: Path | None = None,
        extra_config: tuple[str, ...] = (),
        start_timeout: float = 300.0,
        log=print,
    ):
        self.bin = str(server_bin)
        self.own_dir = data_dir is None
        self.root = Path(data_dir or tempfile.mkdtemp(prefix="pixquery-milvus-srv-"))
        self.extra = tuple(extra_config)
        self.timeout = start_timeout
        self.log = log
        ports = free_ports(len(PORT_OPTIONS) + 1)
        self.ports = dict(zip(PORT_OPTIONS, ports))
        self.ports["etcd-peer"] = ports[-1]
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.starts: list[float] = []  # seconds each start took

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    def _etcd_config(self) -> Path:
        p = self.root / "embedEtcd.yaml"
        c, peer = self.ports["etcd"], self.ports["etcd-peer"]
        p.write_text(
            f"listen-client-urls: http://127.0.0.1:{c}\nadvertise-client-urls: http://127.0.0.1:{c}\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\ninitial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\nquota-backend-bytes: 4294967296\n"
            "auto-compaction-mode: revision\nauto-compaction-retention: '1000'\n"
        )
        return p

    def start(self) -> float:
        t0 = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [self.bin, "--data", str(self.root / "data")]
        for name in PORT_OPTIONS:
            cmd += [f"--{name}-port", str(self.ports[name])]
        for kv in self.extra:
            cmd += ["--extra-config", kv]
        env = dict(os.environ, ETCD_CONFIG_PATH=str(self._etcd_config()), PYTHONUNBUFFERED="1")
        self.logfile = self.root / f"milvus-server-{len(self.starts)}.log"
        with open(self.logfile, "w") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while time.time() - t0 < self.timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-server exited ({self.proc.returncode}); see {self.logfile}")
            if "Ctrl+C to exit" in self.logfile.read_text(errors="replace"):  # printed once healthy
                break
            time.sleep(0.5)
        else:
            self.stop()
            raise TimeoutError(f"milvus-server not up in {self.timeout:.0f} s; see {self.logfile}")
        self.pid = self._server_pid()
        if self.pid is None:
            self.stop()
            raise RuntimeError(f"milvus-server is up but its milvus process is not found; see {self.logfile}")
        self.starts.append(time.time() - t0)
        self.log(f"milvus standalone up at {self.uri} (pid {self.pid}) in {self.starts[-1]:.1f} s")
        return self.starts[-1]

    def _server_pid(self) -> int | None:
        for pid in _children(self.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"/milvus") and b"standalone" in argv:
                return pid
        return None

    def stop(self) -> None:
        """SIGINT to the script (it terminates its milvus process), then make sure both are gone."""
        if self.proc is None:
            return
        server = self.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for _ in range(100):  # its milvus process: terminated by the script; killed here if it lingers
            if not server or not Path(f"/proc/{server}").exists():
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(server, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None
        self.pid = None

    def restart(self) -> float:
        self.stop()
        time.sleep(1)
        return self.start()

    def rss_mb(self) -> float:
        return proc_kb(self.pid, "VmRSS") / 1024

    def peak_mb(self) -> float:
        return proc_kb(self.pid, "VmHWM") / 1024

    def cleanup(self) -> None:
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.root, ignore_errors=True)
