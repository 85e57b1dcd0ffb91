"""Searching: GET /api/search (text, an image of the library, an earlier upload), POST /api/search/image."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from pixquery.filters import DATE_PATTERN, POINT_PATTERN
from pixquery.server.api_errors import ApiError
from pixquery.server.config import MAX_ID, ServerConfig
from pixquery.server.openapi import THRESHOLD_SCHEMA
from pixquery.server.schemas import ERRORS, ErrorBody, SearchPage
from pixquery.server.state import MAX_EXTRA_PARTS, ServerDep
from pixquery.server.uploads import read_upload

# `in` folders per search, and characters of one: all of a search's parameters must fit in the
# request line the HTTP server reads (16 KiB, percent-encoded).
MAX_FOLDERS = 8
MAX_PATH = 256
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
UPLOAD_LINKS = {
    "MorePages": {"operationId": "search_api_search_get", "parameters": {"upload_id": "$response.body#/upload_id"}}
}
# The parameters that name what to search for: a search needs at least one of them.
QUERY_PARAMETERS = ("q", "add", "subtract", "like", "unlike", "image_id", "upload_id")
# Not blank as Python's str.strip() sees it (what the server strips): a character that is not
# whitespace, where JSON Schema's (ECMA-262) \s lacks \x1c-\x1f and \x85 and has \ufeff.
NOT_BLANK = r"[^\s\x1c-\x1f\x85]|\ufeff"
PHOTO_ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": MAX_ID}
THRESHOLD_DOC = (
    "angular distance 0..1 above which results are dropped, or 'auto' (the calibrated one; 400 when none is stored)"
)


def filter_params(
    # The patterns are stated in the schema and checked by pixquery.filters (same patterns), whose
    # 422 says in words what a date or a place looks like.
    after: Optional[str] = Query(
        None,
        json_schema_extra={"pattern": DATE_PATTERN},
        description="taken in or after this period: 2019, 2019-06, "
        "2019-06-15 or 2019-06-15T08:30 (wall-clock time where it was taken)",
    ),
    before: Optional[str] = Query(
        None,
        json_schema_extra={"pattern": DATE_PATTERN},
        description="taken before this period starts (before=2019-09: up to 31 August); must be later than `after`",
    ),
    folders: list[str] = Query(
        [],
        alias="in",
        description="only files in this folder or below (absolute path; repeat for several)",
        json_schema_extra={"maxItems": MAX_FOLDERS, "items": {"type": "string", "maxLength": MAX_PATH}},
    ),
    media: Optional[str] = Query(None, alias="type", pattern="^(photo|video)$", description="photo or video"),
    camera: Optional[str] = Query(None, max_length=200, description="camera make or model contains this (any case)"),
    near: Optional[str] = Query(
        None, json_schema_extra={"pattern": POINT_PATTERN}, description="taken near LAT,LON (decimal degrees, EXIF GPS)"
    ),
    within: Optional[float] = Query(
        None, gt=0, le=20038, description="with `near` only: within this many km (default 10)"
    ),
    sort: str = Query(
        "score", pattern="^(score|date)$", description="score (best first) or date (the page's results, oldest first)"
    ),
) -> dict[str, Any]:
    """The filter parameters of a search (pixquery.filters), still k results per page when k pass.
    Two rules across them (422 otherwise): `after` earlier than `before`, `within` only with `near`."""
    if len(folders) > MAX_FOLDERS or any(len(f) > MAX_PATH for f in folders):
        raise ApiError(422, f"in: at most {MAX_FOLDERS} folders, each at most {MAX_PATH} characters")
    return {
        "filters": dict(
            after=after, before=before, folders=folders, media=media, camera=camera, near=near, within=within
        ),
        "sort": sort,
    }


FilterDep = Annotated[dict, Depends(filter_params)]


def router(config: ServerConfig) -> APIRouter:
    """The search endpoints; their parameters' defaults and limits come from `config`."""
    api = APIRouter()
    max_q = config.max_query_chars
    phrase_schema = {"type": "string", "maxLength": max_q, "pattern": NOT_BLANK}

    @api.get(
        "/api/search",
        response_model=SearchPage,
        tags=["search"],
        responses=ERRORS,
        openapi_extra={
            "x-at-least-one-of": list(QUERY_PARAMETERS),
            "x-max-total-items": {"parameters": ["add", "subtract", "like", "unlike"], "max": MAX_EXTRA_PARTS},
        },
    )
    def search(
        server: ServerDep,
        q: Optional[str] = Query(
            None,
            max_length=max_q,
            description=f"a text query (at most {max_q} characters, not blank)",
            json_schema_extra={"pattern": NOT_BLANK},
        ),
        image_id: Optional[int] = Query(
            None, ge=0, le=MAX_ID, description="search with an image of the library ('more like this')"
        ),
        upload_id: Optional[str] = Query(
            None,
            max_length=64,
            pattern=r"^[0-9a-f]{1,64}$",
            description="a previous image upload (from POST /api/search/image)",
        ),
        k: int = Query(config.page_size, ge=1, description=f"results per page (capped at {config.max_k})"),
        offset: int = Query(0, ge=0, le=config.max_results - 1, description="skip this many results (paging)"),
        threshold: Optional[str] = Query(
            None, max_length=32, description=THRESHOLD_DOC, json_schema_extra=THRESHOLD_SCHEMA
        ),
        add: list[str] = Query(
            [],
            description="a phrase to add to the query, literally (repeatable)",
            json_schema_extra={"items": phrase_schema},
        ),
        subtract: list[str] = Query(
            [],
            description="a phrase to subtract: photos like it go down, and in a library indexed with OCR "
            "photos whose text holds it go after all others (repeatable)",
            json_schema_extra={"items": phrase_schema},
        ),
        like: list[int] = Query(
            [],
            description="a photo of the library to add: 'more like this' (repeatable; left out of the results)",
            json_schema_extra={"items": PHOTO_ID_SCHEMA},
        ),
        unlike: list[int] = Query(
            [],
            description="a photo of the library to subtract: 'less like this' (repeatable)",
            json_schema_extra={"items": PHOTO_ID_SCHEMA},
        ),
        image_weight: float = Query(
            1.0, ge=-100, le=100, description="weight of image_id or upload_id in the query (negative: less like it)"
        ),
        match: str = Query(
            "both",
            pattern="^(both|text|semantic)$",
            description="both: by meaning and, in a library indexed with OCR, by the text in photos (fused); "
            "text or semantic: one of them alone",
        ),
        filtering: FilterDep = None,
        collapse: bool = Query(
            False, description="fold near-duplicate photos into the best-ranked of them (its `duplicates` lists them)"
        ),
        collapse_threshold: Optional[float] = Query(
            None,
            ge=0,
            le=1,
            description="collapse: near-duplicates at most this angular distance apart [default: the server's --duplicate-threshold]",
        ),
    ):
        """Search by text (`q`), by an image of the library (`image_id`) or by an earlier upload
        (`upload_id`), or by any combination of them with added and subtracted phrases and photos;
        optionally filtered (after, before, in, type, camera, near + within) and sorted by date.

        A combined query is the weighted sum of its parts' normalised embeddings, normalised
        (docs/search.md). `q` takes the inline syntax: `beach +sunset -people` adds "sunset" and
        subtracts "people"; a hyphen inside a word (`t-shirt`) is part of the word; `\\-`, `\\+`
        or double quotes make a leading `-` / `+` literal. Repeat `add`, `subtract`, `like` and
        `unlike` for several phrases or photos, e.g. `?q=beach&add=sunset&subtract=people&like=12&unlike=40`.

        Two rules across parameters, which JSON Schema cannot state (so they are written here and in
        `x-at-least-one-of` / `x-max-total-items`): give at least one of `q`, `add`, `subtract`,
        `like`, `unlike`, `image_id` and `upload_id` (none: 422), and at most
        32 `add`, `subtract`, `like` and `unlike` values in all (more: 422). A `q` whose inline
        syntax is malformed (`dog +`, an unclosed quote) is answered 400.

        In a library indexed with OCR (`pixquery index --ocr`), the phrases added are also matched
        against the text read in the photos; each hit then says `found_by` and, when its text
        matched, the lines (`matched`: text, box, confidence). A photo whose text holds every word
        of a subtracted phrase (`invoice -draft`: a photo reading "DRAFT") is no text hit, and comes
        after every other result (with `match=text`: not at all). `collapse` folds text hits too."""
        return server.search(
            text=q,
            image_id=image_id,
            upload_id=upload_id,
            k=k,
            offset=offset,
            threshold=threshold,
            add=add,
            subtract=subtract,
            like=like,
            unlike=unlike,
            image_weight=image_weight,
            match=match,
            collapse=collapse,
            collapse_threshold=collapse_threshold,
            **filtering,
        )

    @api.post(
        "/api/search/image",
        response_model=SearchPage,
        tags=["search"],
        openapi_extra=UPLOAD_SCHEMA,
        responses={
            **ERRORS,
            200: {"links": UPLOAD_LINKS},
            413: {"model": ErrorBody, "description": "upload too large"},
            415: {"model": ErrorBody, "description": "not multipart/form-data nor an image body"},
        },
    )
    async def search_image(
        request: Request,
        server: ServerDep,
        k: int = Query(config.page_size, ge=1, description=f"results per page (capped at {config.max_k})"),
        threshold: Optional[str] = Query(
            None, max_length=32, description=THRESHOLD_DOC, json_schema_extra=THRESHOLD_SCHEMA
        ),
        filtering: FilterDep = None,
        collapse: bool = Query(False, description="fold near-duplicate photos into the best-ranked of them"),
        collapse_threshold: Optional[float] = Query(None, ge=0, le=1),
    ):
        """Search with a photo: multipart form field `file`, or the image bytes as the body.

        The answer's `upload_id` gets further pages from GET /api/search without uploading again."""
        data = await read_upload(request, config.max_upload_bytes)
        upload_id = hashlib.sha256(data).hexdigest()[:32]
        vector = server.uploads.get(upload_id)
        if vector is None:
            vector = await run_in_threadpool(server.embed_upload, data)
            server.uploads.put(upload_id, vector)
        page = await run_in_threadpool(
            lambda: server.search(
                vector=vector,
                k=k,
                offset=0,
                threshold=threshold,
                collapse=collapse,
                collapse_threshold=collapse_threshold,
                **filtering,
            )
        )
        page["query"] = {
            "upload_id": upload_id,
            **{key: v for key, v in page["query"].items() if key in ("filters", "sort")},
        }
        page["upload_id"] = upload_id
        return page

    return api
