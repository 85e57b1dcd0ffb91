"""Searching: GET /api/search (text, an image of the library, an earlier upload), POST /api/search/image."""

from __future__ import annotations

import hashlib
from typing import Optional

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from pixquery.server.config import MAX_ID, ServerConfig
from pixquery.server.openapi import THRESHOLD_SCHEMA
from pixquery.server.schemas import ERRORS, ErrorBody, SearchPage
from pixquery.server.state import ServerDep
from pixquery.server.uploads import read_upload

# What POST /api/search/image reads (pixquery.server.uploads): a multipart form with the image as
# the field `file`, or the image's bytes as the body (an image/* type, or application/octet-stream).
_BYTES = {"type": "string", "format": "binary"}
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "description": "the image: any format the indexer reads (JPEG, PNG, WebP, HEIC with pillow-heif, ...)",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": _BYTES}},
                "encoding": {"file": {"contentType": "image/*, application/octet-stream"}},
            },
            "image/*": {"schema": _BYTES},
            "application/octet-stream": {"schema": _BYTES},
        },
    }
}
# OpenAPI link: the answer's upload_id pages on through GET /api/search.
UPLOAD_LINKS = {"MorePages": {"operationId": "search_api_search_get", "parameters": {"upload_id": "$response.body#/upload_id"}}}
THRESHOLD_DOC = "angular distance 0..1 above which results are dropped, or 'auto' (the calibrated one; 400 when none is stored)"


def router(config: ServerConfig) -> APIRouter:
    """The search endpoints; their parameters' defaults and limits come from `config`."""
    api = APIRouter()
    max_q = config.max_query_chars

    @api.get("/api/search", response_model=SearchPage, tags=["search"], responses=ERRORS,
             openapi_extra={"x-exactly-one-of": ["q", "image_id", "upload_id"]})
    def search(
        server: ServerDep,
        q: Optional[str] = Query(None, max_length=max_q, description=f"a text query (at most {max_q} characters, not blank)",
                                 json_schema_extra={"pattern": r"\S"}),
        image_id: Optional[int] = Query(None, ge=0, le=MAX_ID, description="search with an image of the library ('more like this')"),
        upload_id: Optional[str] = Query(None, max_length=64, pattern=r"^[0-9a-f]{1,64}$",
                                         description="a previous image upload (from POST /api/search/image)"),
        k: int = Query(config.page_size, ge=1, description=f"results per page (capped at {config.max_k})"),
        offset: int = Query(0, ge=0, le=config.max_results - 1, description="skip this many results (paging)"),
        threshold: Optional[str] = Query(None, max_length=32, description=THRESHOLD_DOC, json_schema_extra=THRESHOLD_SCHEMA),
    ):
        """Search by text (`q`), by an image of the library (`image_id`) or by an earlier upload (`upload_id`).

        Give exactly one of `q`, `image_id` and `upload_id` (none, or two of them: 422). JSON Schema
        cannot state a rule across query parameters, so it is written here and in `x-exactly-one-of`."""
        return server.search(text=q, image_id=image_id, upload_id=upload_id, k=k, offset=offset, threshold=threshold)

    @api.post("/api/search/image", response_model=SearchPage, tags=["search"],
              openapi_extra=UPLOAD_SCHEMA, responses={**ERRORS, 200: {"links": UPLOAD_LINKS}, 413: {"model": ErrorBody, "description": "upload too large"},
                                                      415: {"model": ErrorBody, "description": "not multipart/form-data nor an image body"}})
    async def search_image(
        request: Request,
        server: ServerDep,
        k: int = Query(config.page_size, ge=1, description=f"results per page (capped at {config.max_k})"),
        threshold: Optional[str] = Query(None, max_length=32, description=THRESHOLD_DOC, json_schema_extra=THRESHOLD_SCHEMA),
    ):
        """Search with a photo: multipart form field `file`, or the image bytes as the body.

        The answer's `upload_id` gets further pages from GET /api/search without uploading again."""
        data = await read_upload(request, config.max_upload_bytes)
        upload_id = hashlib.sha256(data).hexdigest()[:32]
        vector = server.uploads.get(upload_id)
        if vector is None:
            vector = await run_in_threadpool(server.embed_upload, data)
            server.uploads.put(upload_id, vector)
        page = await run_in_threadpool(lambda: server.search(vector=vector, k=k, offset=0, threshold=threshold))
        page["query"] = {"upload_id": upload_id}
        page["upload_id"] = upload_id
        return page

    return api
