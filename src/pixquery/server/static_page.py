"""The search page's files (shipped in the package), read once at start-up and served from memory."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def static_files(static_dir: Path | None) -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, etag) of the page's files, read once at start-up."""
    root = static_dir or resources.files("pixquery.server") / "static"
    out = {}
    for entry in root.iterdir():
        name = entry.name
        ext = os.path.splitext(name)[1]
        if ext in STATIC_TYPES and not name.startswith("."):
            data = entry.read_bytes()
            out[name] = (data, STATIC_TYPES[ext], '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
    return out
