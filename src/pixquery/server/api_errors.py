"""The server's errors and how each becomes a JSON answer, `{"error": "...", "status": N}`.

4xx for anything the client can fix, 503 when the library has no index yet or the vector store
does not answer, and a bare 500 (traceback in the server log only) for bugs.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixquery.errors import IndexStoreError, LibraryError, PixqueryError

log = logging.getLogger(__name__)


class ServerBusy(Exception):
    """No pooled Library became free in time."""


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(ServerBusy)
    async def _busy(request, exc):
        return error_response(503, "the server is busy: try again", {"Retry-After": "1"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = "not found"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ())[1:]) or "request"
            parts.append(f"{loc}: {e.get('msg', 'invalid')}")
        return error_response(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(PixqueryError)
    async def _pixquery_error(request, exc: PixqueryError):
        return error_response(503 if isinstance(exc, (LibraryError, IndexStoreError)) else 400, str(exc))

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_response(500, "internal server error (see the server's log)")
