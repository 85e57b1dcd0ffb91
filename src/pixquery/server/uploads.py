"""Reading an uploaded image (search by photo) from a request, within a size limit.

The body is counted as it arrives (a chunked upload has no Content-Length to check up front) and
the request is refused with 413 as soon as it passes the limit. Multipart bodies are parsed by
Starlette's `request.form`, bounded: one file, a few fields, small non-file parts.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixquery.server.api_errors import ApiError

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
MAX_FORM_FIELDS = 5
MAX_FIELD_BYTES = 16 * 1024  # a non-file form field (the page sends none)

# The media types POST /api/search/image accepts (also what its OpenAPI schema lists).
RAW_TYPES = ("image/", "application/octet-stream")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload too large: the limit is {limit / 1048576:g} MiB")


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes: multipart field `file` (or the first file), or the raw body.
    Refused with 413 as soon as the request is known to be larger than `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit + MULTIPART_OVERHEAD:
                raise _too_large(limit)
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit + MULTIPART_OVERHEAD:
                raise _too_large(limit)
        return message

    counted = Request(request.scope, receive)  # the same request, its body read through the counter
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        try:
            form = await counted.form(max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES)
        except StarletteHTTPException as e:  # Starlette's answer to a malformed or over-limit form
            raise ApiError(400, f"bad multipart upload: {e.detail}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
            if upload is None:
                raise ApiError(422, "no file in the upload: send it as the form field 'file'")
            data = await upload.read()
        finally:
            await form.close()
    elif ctype.startswith(RAW_TYPES) or not ctype:
        parts = []
        async for chunk in counted.stream():
            parts.append(chunk)
        data = b"".join(parts)
    else:
        raise ApiError(415, "send the image as multipart/form-data (field 'file') or as an image/* body")
    if len(data) > limit:
        raise _too_large(limit)
    if not data:
        raise ApiError(400, "the upload is empty")
    return data
