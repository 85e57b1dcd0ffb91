"""One photo: its metadata, thumbnails and the original file."""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Path as PathParam, Query, Request
from fastapi.responses import Response

from pixquery.errors import BadImage
from pixquery.server import thumbnails
from pixquery.server.api_errors import ApiError
from pixquery.server.config import MAX_ID
from pixquery.server.http_files import derived_image_headers, etag_matches, file_response
from pixquery.server.schemas import ERRORS, ImageInfo
from pixquery.server.state import ServerDep

router = APIRouter()


@router.get("/api/images/{image_id:int}", response_model=ImageInfo, tags=["images"], responses=ERRORS)
def image(server: ServerDep, image_id: int = PathParam(..., ge=0, le=MAX_ID)):
    """Metadata of one image: path, size, pixel size, dates, and the URLs of its files."""
    return server.image_info(image_id)


@router.get("/api/images/{image_id:int}/thumbnail", tags=["images"], response_class=Response,
            responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG thumbnail"}})
def thumbnail(
    request: Request,
    server: ServerDep,
    image_id: int = PathParam(..., ge=0, le=MAX_ID),
    size: int = Query(thumbnails.DEFAULT_SIZE, description=f"one of {list(thumbnails.SIZES)}"),
    v: Optional[str] = Query(None, max_length=64, description="version from a search result; makes the answer cacheable for a year"),
):
    """A JPEG thumbnail (made once, cached on disk; ETag and Cache-Control set)."""
    if size not in thumbnails.SIZES:
        raise ApiError(422, f"size must be one of {list(thumbnails.SIZES)}")
    with server.open_image(image_id) as opened:
        etag = f'"{thumbnails.Thumbnails.key(image_id, opened.stat, size)}"'
        headers = derived_image_headers(etag, v, opened.stat)
        if etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        try:
            data, _ = server.thumbs.get(image_id, opened.file, opened.stat, size)
        except BadImage as e:
            raise ApiError(422, f"cannot make a thumbnail: {e.reason}") from None
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get("/api/images/{image_id:int}/original", tags=["images"], response_class=Response,
            responses={**ERRORS, 200: {"content": {"image/*": {}}, "description": "the file as it is on disk"}})
def original(request: Request, server: ServerDep, image_id: int = PathParam(..., ge=0, le=MAX_ID)):
    """The original file, as it is on disk (single byte ranges supported)."""
    return file_response(request, server.open_image(image_id))
