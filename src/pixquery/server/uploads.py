"""Reading an uploaded image (search by photo) from a request, within a size limit."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from pixquery.server.api_errors import ApiError


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes: multipart field `file` (or the first file), or the raw body.
    Refused with 413 as soon as the request is known to be larger than `limit`."""
    declared = request.headers.get("content-length")
    overhead = 64 * 1024  # multipart boundaries and headers
    if declared is not None:
        try:
            if int(declared) > limit + overhead:
                raise ApiError(413, f"upload too large: the limit is {limit / 1048576:g} MiB")
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
    ctype = request.headers.get("content-type", "")
    received = 0

    async def limited():
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + overhead:
                raise ApiError(413, f"upload too large: the limit is {limit / 1048576:g} MiB")
            yield chunk

    if ctype.startswith("multipart/form-data"):
        parser = MultiPartParser(request.headers, limited(), max_files=1, max_fields=5)
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise ApiError(400, f"bad multipart upload: {e.message}") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            upload = next((v for _, v in form.multi_items() if isinstance(v, UploadFile)), None)
        if upload is None:
            raise ApiError(422, "no file in the upload: send it as the form field 'file'")
        data = await upload.read()
        await upload.close()
    elif ctype.startswith(("image/", "application/octet-stream")) or not ctype:
        parts = []
        async for chunk in limited():
            parts.append(chunk)
        data = b"".join(parts)
    else:
        raise ApiError(415, "send the image as multipart/form-data (field 'file') or as an image/* body")
    if len(data) > limit:
        raise ApiError(413, f"upload too large: the limit is {limit / 1048576:g} MiB")
    if not data:
        raise ApiError(400, "the upload is empty")
    return data

