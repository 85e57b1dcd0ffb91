"""Schemathesis hooks for the contract test (tests/test_contract.py): the rules of GET /api/search
that JSON Schema cannot state, taught to the generator.

The operation's description states them (and `x-at-least-one-of` / `x-max-total-items`): at least
one of q, add, subtract, like, unlike, image_id and upload_id (else 422); at most 32 add /
subtract / like / unlike values in all (else 422); and `q` in the inline syntax (malformed: 400;
pixquery.query.parse_inline is its grammar). A schema-valid ("positive") case that breaks one
of them is mended, so that the positive-data check still holds the server to a 2xx for every
other parameter. Negative cases are left as generated.

The filters of both search operations have two rules across parameters too (their descriptions
say so):
`after` earlier than `before`, and `within` only with `near` (else 422): mended the same way.
"""

from __future__ import annotations

import schemathesis
from schemathesis import GenerationMode

QUERY_PARAMETERS = ("q", "add", "subtract", "like", "unlike", "image_id", "upload_id")
LISTS = ("add", "subtract", "like", "unlike")
MAX_TOTAL_ITEMS = 32
FALLBACK_QUERY = "a photo"


def _parses(text) -> bool:
    from pixquery.errors import PixqueryError
    from pixquery.query import parse_inline

    try:
        parse_inline(str(text).strip())
    except PixqueryError:
        return False
    return True


def _mend_filters(query: dict) -> None:
    """A positive case's filters kept within the rules across them (pixquery.filters.Filter.parse)."""
    from pixquery.errors import PixqueryError
    from pixquery.filters import parse_date

    if query.get("after") is not None and query.get("before") is not None:
        try:
            if parse_date(query["after"]) >= parse_date(query["before"]):
                del query["before"]
        except PixqueryError:
            pass  # not a date: the schema's pattern says so, the server's 422 is right
    if query.get("within") is not None and query.get("near") is None:
        del query["within"]


@schemathesis.hook
def map_case(context, case):
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    if case.operation.path in ("/api/search", "/api/search/image") and case.query:
        query = dict(case.query)
        _mend_filters(query)
        case.query = query
    if case.operation.method.upper() != "GET" or case.operation.path != "/api/search":
        return case
    query = dict(case.query or {})
    # An empty list is sent as nothing at all: it does not count.
    if not any(query.get(name) not in (None, []) for name in QUERY_PARAMETERS):
        query["q"] = FALLBACK_QUERY
    if "q" in query and not _parses(query["q"]):
        query["q"] = FALLBACK_QUERY
    room = MAX_TOTAL_ITEMS
    for name in LISTS:
        if name in query:
            values = query[name] if isinstance(query[name], list) else [query[name]]
            query[name] = values[:room]
            room -= len(query[name])
    case.query = query
    return case
