"""Server and library facts: /api/health, /api/info, /api/status."""

from __future__ import annotations

from fastapi import APIRouter

from pixquery import __version__
from pixquery.server.schemas import ERRORS, Health, LibraryInfo, Status
from pixquery.server.state import ServerDep

router = APIRouter()


@router.get("/api/health", response_model=Health, tags=["server"], responses=ERRORS)
def health():
    """Liveness: answers as long as the server runs (the token is required like everywhere)."""
    return {"status": "ok", "version": __version__}


@router.get("/api/info", response_model=LibraryInfo, tags=["library"], responses=ERRORS)
def info(server: ServerDep):
    """The library: model, index, number of images, calibrated threshold, indexing progress, limits."""
    return server.info()


@router.get("/api/status", response_model=Status, tags=["library"], responses=ERRORS)
def status(server: ServerDep):
    """Cheap to poll: image count, index size and the progress of an index run going on now."""
    return server.status()
