"""The HTTP server: a FastAPI app over one library, plus the search page (static files).

    config = ServerConfig(library=Path("~/.local/share/pixquery").expanduser(), token="s3cret")
    app = create_app(config)      # loads the model and the index now, not on the first request

The pieces, one job each:

- `config`: ServerConfig, the settings;
- `state`: Server, the state behind the endpoints (library pool, encoder, caches, thumbnails),
  handed to them by the `ServerDep` dependency, which reads what this app's lifespan puts into
  every request's state; `pool` and `caches` are its parts;
- `routers/`: the endpoints, one router per resource (status, search, images, videos, duplicates, page);
- `guard`: bind rules, the Host check, the token and the security headers (ASGI middleware);
- `http_files`: ETag / 304, Cache-Control, byte ranges; `uploads`: reading an uploaded image;
- `api_errors`: every error as JSON `{"error": "...", "status": N}`: 4xx for anything the client
  can fix, 503 when the library has no index yet or the server holding its vectors (Milvus) does
  not answer (within the index's `timeout`; the next search after it is back succeeds), and a bare
  500 (traceback in the server log only) for bugs.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from pixquery import __version__
from pixquery.server import openapi
from pixquery.server.api_errors import ApiError, ServerBusy, install_error_handlers
from pixquery.server.caches import TextEncoder, UploadCache
from pixquery.server.config import MAX_ID, ServerConfig
from pixquery.server.guard import Guard, _loopback_host_header, check_bind, is_loopback
from pixquery.server.pool import LibraryPool
from pixquery.server.routers import duplicates, images, page, search, status, videos
from pixquery.server.state import Server

__all__ = [  # the names other modules and tests import from here
    "ApiError",
    "Guard",
    "LibraryPool",
    "MAX_ID",
    "Server",
    "ServerBusy",
    "ServerConfig",
    "TextEncoder",
    "UploadCache",
    "_loopback_host_header",
    "check_bind",
    "create_app",
    "is_loopback",
]


def create_app(config: ServerConfig) -> FastAPI:
    """The ASGI app. Loads the library, the model and the index before returning (so that a
    missing library or model is reported before the server says it is serving)."""
    server = Server(config)

    @asynccontextmanager
    async def lifespan(app):
        # The lifespan state is copied into every request's state: `ServerDep` reads it there.
        yield {"server": server}
        server.close()

    # FastAPIOffline: FastAPI whose /api/docs page loads Swagger UI from this server, not from a CDN
    # (a photo server often runs where the internet is not, and the page is behind the token).
    app = FastAPIOffline(
        title="pixquery",
        version=__version__,
        description="Search a photo library with words or with a photo. All errors are JSON: {error, status}.",
        docs_url="/api/docs",
        redoc_url=None,
        static_url="/api/docs-static",
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.server = server  # for the CLI's start-up messages
    app.add_middleware(Guard, token=config.token, loopback_only_hosts=is_loopback(config.host))
    install_error_handlers(app)
    openapi.install(app, token_required=config.token is not None)
    app.include_router(status.router)
    app.include_router(search.router(config))
    app.include_router(images.router)
    app.include_router(videos.router)
    app.include_router(duplicates.router(config))
    app.include_router(page.router)
    return app
