"""One video: the frame of a hit, and the video file (byte ranges, so that players can seek)."""

from __future__ import annotations

import logging
import os
from typing import Optional

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from pixquery.server import thumbnails
from pixquery.server.api_errors import ApiError
from pixquery.server.config import MAX_ID
from pixquery.server.decoder import DecoderCrashed, shared_path
from pixquery.server.http_files import derived_image_headers, etag_matches, file_response
from pixquery.server.openapi import SIZE_SCHEMA
from pixquery.server.schemas import ERRORS, FILE_RESPONSES, NOT_MODIFIED
from pixquery.server.state import ServerDep

log = logging.getLogger("pixquery.server")
router = APIRouter()


@router.get(
    "/api/videos/{video_id:int}/frame",
    tags=["videos"],
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG of the frame"}, **NOT_MODIFIED},
)
def video_frame(
    request: Request,
    server: ServerDep,
    video_id: int = PathParam(..., ge=0, le=MAX_ID),
    t: float = Query(
        0.0,
        ge=0,
        le=1e7,
        description="seconds into the video (a search result's timestamp); the nearest frame the index stored is shown",
    ),
    size: int = Query(
        thumbnails.DEFAULT_SIZE, description=f"one of {list(thumbnails.SIZES)}", json_schema_extra=SIZE_SCHEMA
    ),
    v: Optional[str] = Query(
        None, max_length=64, description="version from a search result; makes the answer cacheable for a year"
    ),
):
    """The frame shown `t` seconds into a video, as a JPEG thumbnail (made once, cached on disk).

    `t` is snapped to the nearest frame the index stored for the video (the times search results
    give), so the cache holds at most one JPEG per stored frame and size."""
    from pixquery.ingest.video import VideoError

    if size not in thumbnails.SIZES:
        raise ApiError(422, f"size must be one of {list(thumbnails.SIZES)}")
    with server.open_video(video_id) as opened:
        t = server.frame_time(video_id, t)
        etag = f'"{thumbnails.Thumbnails.frame_key(video_id, opened.stat, t, size)}"'
        headers = derived_image_headers(etag, v, opened.stat)
        if etag_matches(request, etag):
            return Response(status_code=304, headers=headers)
        # Decode through the descriptor already checked (no second lookup of the path).
        if server.decoders:
            source = shared_path(opened.file.fileno(), opened.real_path)
        else:
            source = f"/dev/fd/{opened.file.fileno()}" if os.path.exists("/dev/fd") else opened.real_path
        try:
            data, _ = server.thumbs.get_frame(
                video_id, source, opened.stat, t, size, name=os.path.basename(opened.real_path)
            )
        except VideoError as e:
            raise ApiError(422, f"cannot show that frame: {e}") from None
        except DecoderCrashed as e:
            log.warning("frame of video %s (%s): %s", video_id, opened.real_path, e)
            raise ApiError(422, f"cannot show that frame: {e}") from None
    return Response(data, media_type="image/jpeg", headers=headers)


@router.get(
    "/api/videos/{video_id:int}/original",
    tags=["videos"],
    response_class=Response,
    responses={
        **ERRORS,
        200: {"content": {"video/*": {}}, "description": "the video file (byte ranges supported)"},
        **FILE_RESPONSES,
    },
)
def video_original(request: Request, server: ServerDep, video_id: int = PathParam(..., ge=0, le=MAX_ID)):
    """The video file, as it is on disk (single byte ranges supported, so that players can seek)."""
    return file_response(request, server.open_video(video_id))
