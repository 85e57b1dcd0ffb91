"""What the OpenAPI schema (/api/openapi.json) says beyond what FastAPI derives from the endpoints:
the parameter schemas FastAPI cannot express from a Python type, and the auth scheme.

The server and its schema agree exactly (a contract test, tests/test_contract.py, runs
schemathesis over every operation against a real server), so that generated clients work.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pixquery.server import thumbnails
from pixquery.server.guard import TOKEN_COOKIE, TOKEN_HEADER

# A number 0..1 (an angular distance), or "auto" for the calibrated threshold. In a query string
# the number is written as a JSON number; anything else is answered 422.
THRESHOLD_SCHEMA = {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "string", "const": "auto"}]}
SIZE_SCHEMA = {"enum": list(thumbnails.SIZES)}

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "the server's token: `Authorization: Bearer TOKEN`"},
    "tokenHeader": {"type": "apiKey", "in": "header", "name": TOKEN_HEADER, "description": "the token in a header"},
    "tokenCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": TOKEN_COOKIE,
        "description": "the token in the cookie that opening `/?token=TOKEN` sets",
    },
}


def install(app: FastAPI, token_required: bool) -> None:
    """Make `app.openapi()` add the auth scheme (when the server has a token: it is then required
    on every operation, any one of the three ways) to what FastAPI generates."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            if token_required:
                schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
                schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
