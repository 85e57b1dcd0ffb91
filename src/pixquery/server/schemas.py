"""The API's response models and error answers: what the OpenAPI schema (/api/openapi.json) describes."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong, for a person")
    status: int


class Health(BaseModel):
    status: str = "ok"
    version: str


class MatchedText(BaseModel):
    text: str = Field(description="a line of text read in the photo or video (OCR) that matched the query's words")
    box: list[float] = Field(description="where it is: relative x0, y0, x1, y1")
    score: Optional[float] = Field(None, description="the OCR's confidence in reading it, 0..1")
    timestamp: Optional[float] = Field(None, description="a video: seconds where the line is first on screen")
    timestamp_end: Optional[float] = Field(
        None, description="a video: seconds of the last sampled frame the line is still on"
    )


class Hit(BaseModel):
    rank: int
    score: float = Field(description="cosine similarity, higher is closer")
    distance: float = Field(description="angular distance arccos(score)/pi, lower is closer")
    path: str
    name: str
    kind: str = Field("photo", description="photo or video")
    image_id: Optional[int] = None
    video_id: Optional[int] = None
    timestamp: Optional[float] = Field(None, description="video: seconds into the video of the best frame")
    time_range: Optional[list[float]] = Field(None, description="video: first and last second of the matching stretch")
    box: Optional[list[float]] = Field(
        None, description="the matching region, relative x0, y0, x1, y1 (null: the whole picture)"
    )
    width: Optional[int] = None
    height: Optional[int] = None
    size: Optional[int] = Field(None, description="file size in bytes (as indexed)")
    modified: Optional[str] = Field(None, description="file modification time (as indexed), ISO 8601 UTC")
    thumbnail: Optional[str] = Field(None, description="URL of a 256 px JPEG thumbnail (of the frame, for a video)")
    original: Optional[str] = Field(None, description="URL of the original file")
    found_by: Optional[str] = Field(None, description="libraries with OCR on: semantic, text or semantic+text")
    matched: Optional[list[MatchedText]] = Field(
        None, description="the lines of text in the photo that matched the query"
    )
    demoted_by: Optional[list[MatchedText]] = Field(
        None,
        description="the lines of text in the photo that hold a phrase the query subtracted: "
        "why it comes after every hit without them",
    )
    taken: Optional[str] = Field(
        None, description="when it was taken, ISO 8601 wall-clock time where it was taken (no zone)"
    )
    taken_source: Optional[str] = Field(
        None, description="where `taken` comes from: exif, quicktime (a video's container) or mtime"
    )
    lat: Optional[float] = Field(None, description="GPS latitude, decimal degrees (EXIF)")
    lon: Optional[float] = Field(None, description="GPS longitude, decimal degrees (EXIF)")
    camera: Optional[str] = Field(None, description="camera make and model (EXIF)")
    map: Optional[str] = Field(None, description="OpenStreetMap URL of where it was taken (photos with GPS)")
    duplicates: Optional[list[str]] = Field(
        None, description="collapse: paths of the near-duplicates folded into this hit"
    )


class SearchPage(BaseModel):
    query: dict = Field(
        description="what was searched: {text}, {image_id} or {upload_id}; with `filters` "
        "(as understood: after, before, in, type, camera, near, within) and `sort` when given"
    )
    k: int = Field(description="page size actually used (requests above max_k are capped)")
    offset: int
    results: list[Hit]
    next_offset: Optional[int] = Field(None, description="offset of the next page, null when there is none")
    threshold: Optional[float] = Field(None, description="angular-distance threshold applied, null for none")
    dropped: int = Field(0, description="hits the threshold removed while filling this page")
    took_ms: float
    upload_id: Optional[str] = Field(
        None, description="for image uploads: pass as upload_id to GET /api/search for more pages"
    )


class ImageInfo(BaseModel):
    image_id: int
    path: str
    name: str
    folder: str
    size: int = Field(description="bytes, as on disk now")
    width: Optional[int] = None
    height: Optional[int] = None
    modified: str = Field(description="file modification time, ISO 8601 UTC")
    taken: Optional[str] = Field(None, description="EXIF date taken (camera local time), when the photo has one")
    indexed: Optional[str] = None
    content_type: str
    thumbnail: str
    preview: str = Field(
        description="URL to show in a browser: the original when browsers can show it, else a 1024 px JPEG"
    )
    original: str
    similar: str = Field(description="URL of a 'more like this' search")


class IndexInfo(BaseModel):
    kind: str
    entries: int
    params: dict = {}
    size_bytes: Optional[int] = None
    built_at: Optional[str] = None
    recall: Optional[float] = None


class LibraryInfo(BaseModel):
    library: str
    model: str
    model_fingerprint: str
    dim: int
    images: int
    folders: list[str]
    index: Optional[IndexInfo] = None
    calibrated_threshold: Optional[float] = Field(
        None, description="angular distance stored by `pixquery eval`, null if none"
    )
    indexing: Optional[dict] = Field(None, description="progress of an index run going on now, null when none")
    limits: dict
    version: str


class Status(BaseModel):
    images: int
    index_entries: Optional[int] = None
    indexing: Optional[dict] = None


ERRORS = {
    400: {"model": ErrorBody, "description": "bad request"},
    401: {"model": ErrorBody, "description": "missing or wrong token"},
    404: {"model": ErrorBody, "description": "no such image (or not servable)"},
    422: {"model": ErrorBody, "description": "invalid parameter"},
    503: {
        "model": ErrorBody,
        "description": "no index yet, the vector store does not answer, or the server is busy (Retry-After)",
    },
}
NOT_MODIFIED = {304: {"description": "not modified (If-None-Match matched the ETag)"}}
FILE_RESPONSES = {
    **NOT_MODIFIED,
    206: {"description": "the byte range asked for (one range; a request for several gets the whole file)"},
    416: {"description": "no range asked for lies within the file"},
}


class DuplicateMember(BaseModel):
    image_id: int
    path: str
    name: str
    size: int = Field(description="bytes, as indexed")
    width: Optional[int] = None
    height: Optional[int] = None
    modified: str = Field(description="file modification time (as indexed), ISO 8601 UTC")
    date_iso: str = Field(
        description="the date the keep rules use: when it was taken (wall clock there, no zone) or else `modified`"
    )
    date_source: str = Field(description="taken (EXIF or a video's container) or modified")
    sha256: Optional[str] = None
    distance: Optional[float] = Field(None, description="angular distance to the photo suggested to keep")
    keep: bool = Field(description="the one suggested to keep (by the keep rule)")
    same_content_as_keep: bool = Field(description="the very same bytes as the one to keep")
    thumbnail: str
    original: str


class DuplicateGroup(BaseModel):
    kind: str = Field(description="exact: all the same bytes; near: some differ (resized, recompressed, ...)")
    count: int
    keep: str = Field(description="path of the photo suggested to keep")
    bytes: int
    reclaimable_bytes: int = Field(description="bytes of all but the one to keep")
    members: list[DuplicateMember] = Field(description="the one to keep first, then by distance to it")


class DuplicatesPage(BaseModel):
    threshold: float = Field(description="near-duplicates: at most this angular distance apart")
    threshold_cosine: float
    keep_rule: str
    near: bool = Field(description="false: exact copies only")
    photos: int = Field(description="photos whose embeddings were compared")
    method: str = Field(description="how the near pairs were searched")
    seconds: float = Field(
        description="time the search took (when it ran; answers are cached until the library changes)"
    )
    groups_count: int
    duplicates: int = Field(description="photos beyond the one to keep, in all groups")
    reclaimable_bytes: int
    offset: int
    next_offset: Optional[int] = None
    groups: list[DuplicateGroup]
