"""One photo: its metadata, thumbnails and the original file."""

from __future__ import annotations

import logging
import os
from typing import Optional

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from pixquery.errors import BadImage
from pixquery.server import thumbnails
from pixquery.server.api_errors import ApiError
from pixquery.server.config import MAX_ID
from pixquery.server.decoder import DecoderCrashed, shared_path
from pixquery.server.http_files import derived_image_headers, etag_matches, file_response
from pixquery.server.openapi import SIZE_SCHEMA
from pixquery.server.schemas import ERRORS, FILE_RESPONSES, NOT_MODIFIED, ImageInfo
from pixquery.server.state import ServerDep

log = logging.getLogger("pixquery.server")
router = APIRouter()


# OpenAPI links: what a client (or schemathesis' stateful phase) can do next with this image's id.
_IMAGE_LINKS = {
    name: {"operationId": op, "parameters": {"image_id": "$response.body#/image_id"}}
    for name, op in (
        ("Thumbnail", "thumbnail_api_images__image_id__thumbnail_get"),
        ("Original", "original_api_images__image_id__original_get"),
        ("MoreLikeThis", "search_api_search_get"),
    )
}


@router.get(
    "/api/images/{image_id:int}",
    response_model=ImageInfo,
    tags=["images"],
    responses={**ERRORS, 200: {"links": _IMAGE_LINKS}},
)
def image(server: ServerDep, image_id: int = PathParam(..., ge=0, le=MAX_ID)):
    """Metadata of one image: path, size, pixel size, dates, and the URLs of its files."""
    return server.image_info(image_id)


@router.get(
    "/api/images/{image_id:int}/thumbnail",
    tags=["images"],
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG thumbnail"}, **NOT_MODIFIED},
)
def thumbnail(
    request: Request,
    server: ServerDep,
    image_id: int = PathParam(..., ge=0, le=MAX_ID),
    size: int = Query(
        thumbnails.DEFAULT_SIZE, description=f"one of {list(thumbnails.SIZES)}", json_schema_extra=SIZE_SCHEMA
    ),
    v: Optional[str] = Query(
        None, max_length=64, description="version from a search result; makes the answer cacheable for a year"
    ),
):
    """A JPEG thumbnail (made once, cached on disk; ETag and Cache-Control set)."""
    if size not in thumbnails.SIZES:
        raise ApiError(422, f"size must be one of {list(thumbnails.SIZES)}")
    with server.open_image(image_id) as opened:
        etag = f'"{thumbnails.Thumbnails.key(image_id, opened.stat, size)}"'
        headers = derived_image_headers(etag, v, opened.stat)
        if etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        source = shared_path(opened.file.fileno(), opened.real_path) if server.decoders else opened.file
        try:
            data, _ = server.thumbs.get(image_id, source, opened.stat, size, name=os.path.basename(opened.real_path))
        except BadImage as e:
            raise ApiError(422, f"cannot make a thumbnail: {e.reason}") from None
        except DecoderCrashed as e:
            log.warning("thumbnail of image %s (%s): %s", image_id, opened.real_path, e)
            raise ApiError(422, f"cannot make a thumbnail: {e}") from None
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get(
    "/api/images/{image_id:int}/original",
    tags=["images"],
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"image/*": {}}, "description": "the file as it is on disk"},
        **FILE_RESPONSES,
    },
)
def original(request: Request, server: ServerDep, image_id: int = PathParam(..., ge=0, le=MAX_ID)):
    """The original file, as it is on disk (single byte ranges supported)."""
    return file_response(request, server.open_image(image_id))
