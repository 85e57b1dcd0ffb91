"""Rows the catalog hands out: plain dataclasses, one per table a caller reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ImageRow:
    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    width: int | None
    height: int | None
    indexed_at: float
    deleted: int


@dataclass
class IndexRow:
    id: int
    model_id: int
    kind: str
    params: dict[str, Any]
    path: str | None
    built_at: float | None
    build_seconds: float | None
    size_bytes: int | None
    recall: float | None
    next_ref_id: int
    active: int


@dataclass
class ModelRow:
    id: int
    name: str
    fingerprint: str
    dim: int
    threshold: float | None
    threshold_metric: str | None
    threshold_source: str | None


@dataclass
class Item:
    """What one index id points at: a whole image, or a detection (region / video frame)."""

    image_id: int | None
    detection_id: int | None


@dataclass
class VideoRow:
    id: int
    path: str
    size: int
    mtime_ns: int
    width: int | None
    height: int | None
    duration: float | None
    deleted: int


@dataclass
class DetectionRow:
    """A region of a photo or a (region of a) video frame; box relative (0..1) x0, y0, x1, y1."""

    id: int
    image_id: int | None
    video_id: int | None
    timestamp: float | None
    box: tuple[float, float, float, float]
