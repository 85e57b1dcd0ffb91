"""Schemathesis hooks for the contract test (tests/test_contract.py): the rules of GET /api/search
that JSON Schema cannot state, taught to the generator.

The operation's description states them (and `x-at-least-one-of` / `x-max-total-items`): at least
one of q, add, subtract, like, unlike, image_id and upload_id (else 422); at most 32 add /
subtract / like / unlike values in all (else 422); and `q` in the inline syntax (malformed: 400;
pixquery.query.parse_inline is its grammar). A schema-valid ("positive") case that breaks one
of them is mended, so that the positive-data check still holds the server to a 2xx for every
other parameter. Negative cases are left as generated.
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


@schemathesis.hook
def map_case(context, case):
    if case.operation.method.upper() != "GET" or case.operation.path != "/api/search":
        return case
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
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
