"""The search page: `/` and its static files, from a fixed in-memory table (not in the OpenAPI schema)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pixquery.server.api_errors import ApiError
from pixquery.server.http_files import etag_matches
from pixquery.server.state import Server, ServerDep
from pixquery.server.static_page import PAGE_CSP

router = APIRouter()


def _static(server: Server, name: str, request: Request, csp: bool = False) -> Response:
    item = server.static.get(name)
    if item is None:
        raise ApiError(404, "not found")
    data, ctype, etag = item
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if csp:
        headers["Content-Security-Policy"] = PAGE_CSP
    if etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=ctype, headers=headers)


@router.get("/", include_in_schema=False)
def page(request: Request, server: ServerDep):
    return _static(server, "index.html", request, csp=True)


@router.get("/static/{name}", include_in_schema=False)
def static(name: str, request: Request, server: ServerDep):
    # Served from a fixed in-memory table: the name is a key, never a path.
    return _static(server, name, request)
