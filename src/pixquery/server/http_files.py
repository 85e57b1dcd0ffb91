"""Answering with files: ETag revalidation (304), Cache-Control of derived images, byte ranges (206 / 416)."""

from __future__ import annotations

import mimetypes
import os
from datetime import datetime, timezone
from typing import Iterator
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
    """Stream an opened, checked file: ETag / 304, and one byte range (206) for players."""
    st = opened.stat
    etag = f'"{st.st_size}-{st.st_mtime_ns}"'
    ctype = mimetypes.guess_type(opened.real_path)[0] or "application/octet-stream"
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Content-Security-Policy": FILE_CSP,
               "Accept-Ranges": "bytes",
               "Last-Modified": datetime.fromtimestamp(st.st_mtime, timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")}
    if etag_matches(request, etag):
        opened.close()
        return Response(status_code=304, headers=headers)
    disposition = "inline" if ctype.startswith(("image/", "video/")) else "attachment"
    headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(os.path.basename(opened.row.path))}"
    start, end, status = 0, st.st_size - 1, 200
    wanted = request.headers.get("range")
    if wanted and request.headers.get("if-range", etag) == etag:
        span = byte_range(wanted, st.st_size)
        if span is None:
            opened.close()
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{st.st_size}"})
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{st.st_size}"
    headers["Content-Length"] = str(max(0, end - start + 1))
    return StreamingResponse(chunks(opened, start, end - start + 1), status_code=status, media_type=ctype, headers=headers,
                             background=BackgroundTask(opened.close))


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single 'bytes=a-b' / 'bytes=a-' / 'bytes=-n' range; None when unsatisfiable
    or not understood (several ranges are answered as unsatisfiable too: players ask for one)."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec or size == 0:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            n = int(last)
            if n <= 0:
                return None
            return max(0, size - n), size - 1
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if a < 0 or a >= size or b < a:
        return None
    return a, min(b, size - 1)


def chunks(opened: files.OpenedImage, start: int = 0, length: int | None = None, size: int = 256 * 1024) -> Iterator[bytes]:
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

