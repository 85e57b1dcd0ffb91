"""Answering with files: ETag revalidation (304), Cache-Control of derived images, byte ranges (206 / 416)."""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from pixquery.server import files

FILE_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox"


def derived_image_headers(etag: str, version: str | None, st) -> dict:
    """Headers of a thumbnail or video frame: cacheable for a year when the URL names the file's
    current version (size-mtime, as search results give it), else revalidated every time."""
    current = version == f"{st.st_size}-{st.st_mtime_ns}"
    return {"ETag": etag, "Cache-Control": "private, max-age=31536000, immutable" if current else "private, no-cache"}


def etag_matches(request: Request, etag: str) -> bool:
    inm = request.headers.get("if-none-match")
    return bool(inm) and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")])


def file_response(request: Request, opened: files.OpenedImage) -> Response:
    """Stream an opened, checked file: ETag / 304, one byte range (206) for players, 416 when no range fits."""
    st = opened.stat
    etag = f'"{st.st_size}-{st.st_mtime_ns}"'
    ctype = mimetypes.guess_type(opened.real_path)[0] or "application/octet-stream"
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "Content-Security-Policy": FILE_CSP,
        "Accept-Ranges": "bytes",
        "Last-Modified": datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    if etag_matches(request, etag):
        opened.close()
        return Response(status_code=304, headers=headers)
    disposition = "inline" if ctype.startswith(("image/", "video/")) else "attachment"
    headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(os.path.basename(opened.row.path))}"
    start, end, status = 0, st.st_size - 1, 200
    wanted = request.headers.get("range")
    if wanted and request.headers.get("if-range", etag) == etag:
        try:
            span = byte_range(wanted, st.st_size)
        except RangeNotSatisfiable:
            opened.close()
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{st.st_size}"})
        if span is not None:
            start, end = span
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{st.st_size}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    return StreamingResponse(
        chunks(opened, start, end - start + 1),
        status_code=status,
        media_type=ctype,
        headers=headers,
        background=BackgroundTask(opened.close),
    )


class RangeNotSatisfiable(Exception):
    """Every range asked for starts beyond the end of the file (answered 416)."""


_RANGE_SPEC = re.compile(r"^(?:(\d+)-(\d*)|-(\d+))$")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The (first, last) byte to send for a Range header (RFC 9110 section 14), or None to send the whole file.

    One satisfiable range is served (206). A header that is not understood (another unit, bad syntax)
    is ignored, as is a valid request for several ranges when any of them can be satisfied: the
    whole file is the answer (200), as RFC 9110 allows; players ask for one range. Raises
    RangeNotSatisfiable when no range can be (416)."""
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    spans = []
    for element in spec.split(","):
        element = element.strip(" \t")
        if not element:  # an empty list element is allowed
            continue
        m = _RANGE_SPEC.match(element)
        if m is None:
            return None
        if m.group(3) is not None:  # suffix: the last n bytes
            n = int(m.group(3))
            spans.append((max(0, size - n), size - 1) if n > 0 and size > 0 else None)
            continue
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else None
        if b is not None and b < a:
            return None  # an invalid range-spec makes the whole header invalid: ignored
        spans.append((a, size - 1 if b is None else min(b, size - 1)) if a < size else None)
    if not spans:
        return None
    satisfiable = [s for s in spans if s is not None]
    if not satisfiable:
        raise RangeNotSatisfiable()
    return satisfiable[0] if len(spans) == 1 else None


def chunks(
    opened: files.OpenedImage, start: int = 0, length: int | None = None, size: int = 256 * 1024
) -> Iterator[bytes]:
    try:
        opened.file.seek(start)
        left = opened.stat.st_size - start if length is None else length
        while left > 0:
            block = opened.file.read(min(size, left))
            if not block:
                break
            left -= len(block)
            yield block
    finally:
        opened.close()
