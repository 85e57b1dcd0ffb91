"""`pixquery serve`: registered into the main CLI by `pixquery.cli._register_plugins`."""

from __future__ import annotations

import errno
import logging
import secrets
import socket
import sys
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import typer

from pixquery import logs


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)


def serve(
    library: Optional[Path] = typer.Option(
        None,
        "--library",
        "-L",
        envvar="PIXQUERY_LIBRARY",
        help="Library folder [default: $PIXQUERY_LIBRARY or ~/.local/share/pixquery]",
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model name or local model folder [default: the library's]"
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs --token (or --allow-public)"
    ),
    port: int = typer.Option(
        8765, "--port", "-p", min=0, max=65535, metavar="PORT", help="Port to listen on (0: any free one)"
    ),
    token: Optional[str] = typer.Option(
        None,
        "--token",
        envvar="PIXQUERY_TOKEN",
        show_envvar=True,
        help="Require this token on every request ('auto': make a random one and print it)",
    ),
    allow_public: bool = typer.Option(
        False, "--allow-public", help="Listen on a public address without a token (anyone reaching it sees your photos)"
    ),
    pool: int = typer.Option(1, "--pool", min=1, max=32, help="Catalog connections serving requests in parallel"),
    text_batch: int = typer.Option(
        1,
        "--text-batch",
        min=1,
        max=256,
        help="Encode up to this many concurrent text queries in one model call (1: one call each)",
    ),
    max_upload_mb: float = typer.Option(
        20.0, "--max-upload-mb", min=0.01, help="Largest photo accepted for search-by-photo"
    ),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in a web browser"),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request"),
    duplicate_threshold: float = typer.Option(
        0.10,
        "--duplicate-threshold",
        min=0.0,
        max=1.0,
        metavar="DISTANCE",
        help="Near-duplicates (the page folds them, /api/duplicates groups them): at most this angular distance apart",
    ),
):
    """Serve a search page and a JSON API (OpenAPI at /api/docs) over a library."""
    import uvicorn

    from pixquery.api import default_library_path
    from pixquery.server.app import ServerConfig, check_bind, create_app, is_loopback

    if token == "auto":
        token = secrets.token_urlsafe(24)
    if token is not None and not token.strip():
        token = None
    check_bind(host, token, allow_public)
    lib = Path(library).expanduser() if library else default_library_path()
    # the server says what it does (model loaded, refused files) at info, or more with -vv
    logs.configure(min(logging.getLogger("pixquery").getEffectiveLevel(), logging.INFO))
    sock = _listen(host, port)  # before the model loads, and before saying "serving"
    port = sock.getsockname()[1]  # --port 0: the one the system picked
    config = ServerConfig(
        library=lib,
        model=model,
        token=token,
        host=host,
        port=port,
        pool_size=pool,
        text_batch=text_batch,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        duplicate_threshold=duplicate_threshold,
    )
    try:
        app = create_app(config)
    except BaseException:
        sock.close()
        raise
    shown_host = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown_host = "127.0.0.1"
    url = f"http://{shown_host}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")
    print(f"pixquery: serving {lib} on {url}", file=sys.stderr, flush=True)
    encoder = app.state.server.pool.encoder
    if getattr(encoder, "random_weights", False):
        print(
            f"pixquery: WARNING: {encoder.name} is a random-weight test model: its rankings are meaningless",
            file=sys.stderr,
            flush=True,
        )
    if not token and not is_loopback(host):
        print(
            "pixquery: WARNING: no token and a public address: anyone who can reach this machine can browse your photos",
            file=sys.stderr,
            flush=True,
        )
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info" if access_log else "warning",
        access_log=access_log,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=5,
        limit_concurrency=256,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(uv_config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one line saying why not (a busy port: exit 2)."""
    from pixquery.errors import PixqueryError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise PixqueryError(f"cannot listen on {host}: {e.strerror}") from None
    family, _, proto, _, address = infos[0]
    # The protocol number matters: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on
    # accepted sockets whose proto is IPPROTO_TCP, and they inherit it from this one. With proto 0 an
    # answer's body (written after its headers) could wait for the client's delayed ACK: +40 ms on
    # requests that come in quick succession (typing, paging), measured on loopback.
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PixqueryError(
                f"port {port} is in use on {host}: stop what uses it, or pick another with --port"
            ) from None
        raise PixqueryError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock
