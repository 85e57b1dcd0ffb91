"""Duplicates: GET /api/duplicates (groups of copies, largest first, with the one to keep) and the
page that shows them side by side, /duplicates. Nothing is ever deleted: the page only shows.

Finding them reads every embedding and range-searches them all (minutes for a million photos), so
an answer is computed once per (threshold, keep rule, exact only) and kept until the catalog
changes on disk; it runs on a Library of its own, so searches do not wait for it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Query, Request

from pixquery.errors import LibraryError, PixqueryError
from pixquery.server.api_errors import ApiError
from pixquery.server.config import ServerConfig
from pixquery.server.routers.page import _static
from pixquery.server.schemas import ERRORS, DuplicatesPage
from pixquery.server.state import Server, ServerDep

KEEP_PATTERN = r"^(largest|oldest|newest|shortest-path)$"
CACHED = 4  # reports kept (each a few MB for a large library)


class ReportCache:
    """DuplicateReports by (threshold, keep, near), dropped when the catalog's files change."""

    def __init__(self):
        self._lock = threading.Lock()  # one computation at a time: a second request waits for the first's answer
        self._reports: OrderedDict = OrderedDict()

    @staticmethod
    def _catalog_version(lib_path: Path) -> tuple:
        from pixquery.api import CATALOG_FILE

        out = []
        for name in (CATALOG_FILE, CATALOG_FILE + "-wal"):
            try:
                st = os.stat(lib_path / name)
                out.append((st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def get(self, server: Server, threshold: float, keep: str, near: bool):
        lib_path = server.pool.libraries[0].path
        with self._lock:
            key = (threshold, keep, near)
            version = self._catalog_version(lib_path)
            hit = self._reports.get(key)
            if hit is not None and hit[0] == version:
                self._reports.move_to_end(key)
                return hit[1]
            from pixquery.api import Library

            with Library.open(lib_path, model=server.config.model, create=False) as lib:
                lib._encoder = server.encoder  # share the loaded model (as the LibraryPool does)
                report = lib.duplicates(threshold=threshold, keep=keep, near=near)
            self._reports[key] = (version, report)
            while len(self._reports) > CACHED:
                self._reports.popitem(last=False)
            return report


def _member(m) -> dict:
    d = m.to_dict()
    d["name"] = os.path.basename(m.path)
    d["modified"] = datetime.fromtimestamp(m.mtime if m.mtime is not None else m.date, timezone.utc).isoformat(
        timespec="seconds"
    )
    d["thumbnail"] = f"/api/images/{m.image_id}/thumbnail"
    d["original"] = f"/api/images/{m.image_id}/original"
    return d


def router(config: ServerConfig) -> APIRouter:
    api = APIRouter()
    cache = ReportCache()

    @api.get("/api/duplicates", response_model=DuplicatesPage, tags=["duplicates"], responses=ERRORS)
    def duplicates(
        server: ServerDep,
        threshold: Optional[float] = Query(
            None,
            ge=0,
            le=1,
            description="near-duplicates: at most this angular distance apart [default: the server's --duplicate-threshold]",
        ),
        keep: str = Query(
            "largest",
            pattern=KEEP_PATTERN,
            description="which copy to suggest keeping: largest, oldest, newest or shortest-path",
        ),
        exact_only: bool = Query(False, description="only exact copies (the same bytes)"),
        limit: int = Query(50, ge=1, le=1000, description="groups per page (largest groups first)"),
        offset: int = Query(0, ge=0, description="skip this many groups (paging)"),
    ):
        """Groups of copies in the library: exact copies (the same content hash) and near-duplicates
        (embeddings within `threshold`), largest group first, each with the photo suggested to keep
        first. Nothing is ever deleted."""
        th = config.duplicate_threshold if threshold is None else threshold
        try:
            report = cache.get(server, th, keep, not exact_only)
        except LibraryError as e:
            raise ApiError(503, str(e)) from None
        except PixqueryError as e:
            raise ApiError(400, str(e)) from None
        data = report.to_dict()
        groups = report.groups[offset : offset + limit]
        data["groups"] = [dict(g.to_dict(), members=[_member(m) for m in g.members]) for g in groups]
        data["offset"] = offset
        data["next_offset"] = offset + limit if offset + limit < len(report.groups) else None
        return data

    @api.get("/duplicates", include_in_schema=False)
    def page(request: Request, server: ServerDep):
        return _static(server, "duplicates.html", request, csp=True)

    return api
