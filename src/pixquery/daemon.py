"""An optional resident query process: `pixquery daemon` keeps a library's text tower and index
loaded and answers `pixquery search` over a unix socket in the library folder.

    pixquery daemon -L ~/photos-library &      # once (or from a user service)
    pixquery search "a dog on a beach" -L ~/photos-library    # ~0.1 s instead of ~0.5 s

Nothing needs it: `pixquery search` asks the socket first (`ask`) and searches in its own process
whenever no daemon answers, or the one that answers cannot speak for the library and model asked
for (another library, another model or precision, model files changed since it loaded them), or
fails. The answer is the same either way (the same Library.search; scores within ~1e-7: the
daemon's text session pre-packs its weights, a one-shot search does not).

The client side of this module (socket_path, ask) imports only the standard library: a search
that a daemon answers never loads numpy, ONNX Runtime or the catalog.

Protocol: one JSON line each way per connection. Request {"v": 1, "op": "search", "library",
"model", "query", "k", "threshold"}; answer {"ok": true, "results": [...], ...}, or {"ok": false,
"error": "...", "user_error": true} (a PixqueryError: the client prints it as its own), or
{"ok": false} (not for this daemon: the client searches in process). The socket is made 0600, and
the client checks that the process behind it runs as the same user (SO_PEERCRED).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

SOCKET_NAME = "query.sock"
PROTOCOL = 1
TIMEOUT_ENV = "PIXQUERY_DAEMON_TIMEOUT"  # seconds the client waits for an answer (default 10)
OFF_ENV = "PIXQUERY_NO_DAEMON"  # 1: never ask a daemon
_MAX_UNIX_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS (searchcmd._from_daemon knows both)


def socket_path(library: str | os.PathLike) -> Path:
    """The daemon's socket for `library`: LIBRARY/query.sock, or, when that path is too long for a
    unix socket, one named by a hash of the library's real path in a private runtime folder."""
    lib = Path(os.path.realpath(os.path.expanduser(library)))
    inside = lib / SOCKET_NAME
    if len(os.fsencode(inside)) <= _MAX_UNIX_PATH:
        return inside
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join("/tmp", f"pixquery-{os.getuid()}")
    return Path(base) / f"pixquery-{hashlib.sha256(os.fsencode(lib)).hexdigest()[:20]}.sock"


def _private_dir(folder: Path) -> bool:
    """Create or check a folder only this user can use (for a socket outside the library)."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
        return st.st_uid == os.getuid() and not st.st_mode & 0o077
    except OSError:
        return False


def normalize_model(model: str | None) -> str | None:
    """A model argument as Library.model_name remembers it: a local folder by its absolute path."""
    if model and os.path.isdir(os.path.expanduser(model)):
        return os.path.abspath(os.path.expanduser(model))
    return model


def _same_user(sock: socket.socket) -> bool:
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:  # not Linux: the socket's 0600 mode is the check
        return True
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i")))
    except OSError:
        return False
    return uid == os.getuid()


def _exchange(path: Path, request: dict, timeout: float) -> dict | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        if not _same_user(sock):
            return None
        sock.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    answer = json.loads(b"".join(chunks))
    return answer if isinstance(answer, dict) else None


def ask(library: str | os.PathLike, request: dict, timeout: float | None = None) -> dict | None:
    """The answer of the daemon for `library`, or None when there is none, it is dead, stale,
    silent for `timeout` seconds, not this user's, or answers something unreadable."""
    if os.environ.get(OFF_ENV, "").strip() not in ("", "0"):
        return None
    path = socket_path(library)
    if path.name != SOCKET_NAME and not _private_dir(path.parent):
        return None
    if timeout is None:
        try:
            timeout = float(os.environ.get(TIMEOUT_ENV) or 10.0)
        except ValueError:
            timeout = 10.0
    try:
        answer = _exchange(
            path, dict(request, v=PROTOCOL, library=os.path.realpath(os.path.expanduser(library))), timeout
        )
    except (OSError, ValueError):  # no socket, nobody listening (a dead daemon), a timeout, garbage
        return None
    if not answer or answer.get("v") != PROTOCOL:
        return None
    return answer


# -- the daemon ------------------------------------------------------------------------------


class QueryDaemon:
    """Answers search requests for one library from a resident Library (text tower warm, index
    loaded). One request at a time: a warm text query takes ~10 ms."""

    def __init__(self, library: str | os.PathLike, model: str | None = None, *, idle_exit: float = 0.0, log=None):
        self.library = Path(os.path.realpath(os.path.expanduser(library)))
        self.model = normalize_model(model)
        self.idle_exit = idle_exit
        self.log = log or (lambda msg: print(f"pixquery daemon: {msg}", file=sys.stderr, flush=True))
        self.path = socket_path(self.library)
        self.lib = None
        self._stamp = None  # (model name, precision, model files' stat) the loaded encoder is for
        self._sock: socket.socket | None = None
        self._stopping = False

    # -- state --------------------------------------------------------------------------------
    def open(self) -> None:
        from pixquery.api import Library

        self.lib = Library.open(self.library, self.model, create=False)
        self._load()

    def _model_files_stat(self, encoder) -> tuple:
        folder = getattr(encoder, "model_dir", None)
        if folder is None:
            return ()
        from pixquery.encoders.onnx import REQUIRED

        out = []
        for name in REQUIRED:
            try:
                st = os.stat(Path(folder) / name)
                out.append((name, st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((name, None))
        return tuple(out)

    def _load(self) -> None:
        """(Re)load the encoder and warm it: text session, one query, the index."""
        lib = self.lib
        lib._encoder = None
        enc = lib.encoder
        self._stamp = (lib.model_name, lib.precision, self._model_files_stat(enc))
        enc.warm_up(("textual",))
        try:
            lib.search("a photo", k=1)  # loads the index too
        except Exception as e:  # no index yet: requests get the same error the CLI would print
            self.log(f"not searchable yet: {e}")

    def _library_model(self) -> str:
        """The model a search without --model uses: the library's (as Library.model_name says it)."""
        return normalize_model(self.lib.catalog.get_setting("model") or self.lib.default_model())

    def _current(self) -> bool:
        """Whether the loaded encoder still is the library's model (catalog setting, precision, files)."""
        lib = self.lib
        return self._stamp == (lib.model_name, lib.precision, self._model_files_stat(lib.encoder))

    # -- requests -------------------------------------------------------------------------------
    def answer(self, request: dict) -> dict:
        from pixquery.errors import PixqueryError

        if request.get("v") != PROTOCOL or request.get("op") not in ("search", "ping", "stop"):
            return {"v": PROTOCOL, "ok": False}
        if request.get("library") != str(self.library):
            return {"v": PROTOCOL, "ok": False, "why": "another library"}
        if request["op"] == "ping":
            return {"v": PROTOCOL, "ok": True, "pid": os.getpid(), "model": self.lib.model_name}
        if request["op"] == "stop":
            self._stopping = True
            return {"v": PROTOCOL, "ok": True, "pid": os.getpid()}
        wanted = normalize_model(request.get("model")) or self._library_model()
        if wanted != self.lib.model_name:  # a daemon started with --model M answers for M only
            return {"v": PROTOCOL, "ok": False, "why": "another model"}
        if not self._current():
            self.log("the library's model changed: loading it again")
            self._load()
        try:
            t0 = time.perf_counter()
            results = self.lib.search(
                request.get("query"), k=int(request.get("k", 10)), threshold=request.get("threshold")
            )
            ms = (time.perf_counter() - t0) * 1000
        except PixqueryError as e:
            return {
                "v": PROTOCOL,
                "ok": False,
                "user_error": True,
                "error": str(e),
                "model": self.lib.model_name,
                "random_weights": bool(getattr(self.lib.encoder, "random_weights", False)),
            }
        from pixquery.searchcmd import Found

        enc = self.lib.encoder
        found = Found.of(results)
        return {
            "v": PROTOCOL,
            "ok": True,
            "model": self.lib.model_name,
            "fingerprint": enc.fingerprint,
            "random_weights": bool(getattr(enc, "random_weights", False)),
            "threshold": found.threshold,
            "dropped": found.dropped,
            "results": found.results,
            "locations": found.locations,
            "search_ms": ms,
        }

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        data = b""
        while not data.endswith(b"\n") and len(data) < (1 << 20):
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        try:
            request = json.loads(data)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            reply = {"v": PROTOCOL, "ok": False}
        else:
            try:
                reply = self.answer(request)
            except Exception as e:  # a bug or a broken library: the client searches in process
                self.log(f"request failed: {type(e).__name__}: {e}")
                reply = {"v": PROTOCOL, "ok": False}
        conn.sendall(json.dumps(reply).encode() + b"\n")

    # -- socket ---------------------------------------------------------------------------------
    def bind(self) -> None:
        """Listen on the library's socket. A live daemon there already: PixqueryError; a stale
        socket file (its daemon died): replaced."""
        from pixquery.errors import PixqueryError

        if self.path.name != SOCKET_NAME and not _private_dir(self.path.parent):
            raise PixqueryError(f"cannot use {self.path.parent} for the daemon's socket (not a private folder)")
        if os.path.lexists(self.path):
            if ask(self.library, {"op": "ping"}, timeout=2.0):
                raise PixqueryError(f"a pixquery daemon already answers for {self.library} ({self.path})")
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is 0600 from the start
        try:
            sock.bind(str(self.path))
        except OSError as e:  # another daemon bound it a moment ago, or the folder is read-only
            sock.close()
            raise PixqueryError(f"cannot listen on {self.path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        sock.listen(16)
        self._sock = sock
        self._inode = os.stat(self.path).st_ino

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                if os.stat(self.path).st_ino == self._inode:  # still ours, not a newer daemon's
                    os.unlink(self.path)
            except OSError:
                pass
        if self.lib is not None:
            self.lib.close()

    def serve_forever(self) -> None:
        last = time.monotonic()
        self._sock.settimeout(1.0)
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                if self.idle_exit and time.monotonic() - last > self.idle_exit:
                    self.log(f"idle for {self.idle_exit:g} s: exiting")
                    return
                if not os.path.exists(self.path):  # the socket file was removed: nobody can reach us
                    self.log(f"{self.path} was removed: exiting")
                    return
                continue
            with conn:
                try:
                    self._handle(conn)
                except OSError:
                    pass  # the client went away
            last = time.monotonic()


def run(library: str | os.PathLike, model: str | None = None, *, idle_exit: float = 0.0, ready=None) -> None:
    """Open, warm, listen, then answer until stopped (SIGTERM/SIGINT, `pixquery daemon --stop`,
    `idle_exit` seconds without a request, or the socket file removed)."""
    import signal

    daemon = QueryDaemon(library, model, idle_exit=idle_exit)
    daemon.bind()  # first: a second daemon fails at once, before loading anything
    try:
        t0 = time.perf_counter()
        daemon.open()

        def stop(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        daemon.log(
            f"answering searches of {daemon.library} with {daemon.lib.model_name} on {daemon.path} "
            f"(ready in {time.perf_counter() - t0:.1f} s)"
        )
        if ready:
            ready(daemon)
        try:
            daemon.serve_forever()
        except KeyboardInterrupt:
            pass
    finally:
        daemon.close()


def stop(library: str | os.PathLike) -> int | None:
    """Ask the daemon of `library` to exit; its pid, or None when none answered."""
    answer = ask(library, {"op": "stop"}, timeout=5.0)
    return answer.get("pid") if answer and answer.get("ok") else None
