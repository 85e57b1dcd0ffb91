"""Schemathesis hooks for the contract test (tests/test_contract.py): the one rule of the API that
JSON Schema cannot state, taught to the generator.

GET /api/search takes exactly one of `q`, `image_id` and `upload_id` (its schema says so in its
description and in `x-exactly-one-of`; the server answers 422 otherwise). A schema-valid
("positive") case that gives none or several of them is made to give exactly one, so that the
positive-data check still holds the server to 2xx for every other parameter. Negative cases are
left as generated.
"""

from __future__ import annotations

import schemathesis
from schemathesis import GenerationMode

EXACTLY_ONE = ("q", "image_id", "upload_id")


@schemathesis.hook
def map_case(context, case):
    if case.operation.method.upper() != "GET" or case.operation.path != "/api/search":
        return case
    meta = getattr(case, "meta", None)
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return case
    query = dict(case.query or {})
    given = [name for name in EXACTLY_ONE if name in query]
    if not given:
        query["q"] = "a photo"
    for name in given[1:]:
        del query[name]
    case.query = query
    return case
