"""What flows between the ingest stages, from the plan to the catalog.

    sources  --MediaItem-->  decode (+ crops)  --Piece-->  encode  --EmbeddedPiece-->  write

A photo becomes one Piece; a video becomes many (its frames arrive as they are decoded), the last
one `final`. Everything here pickles: the local executor sends it between processes and Ray
between machines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pixquery.encoders.base import PreprocessConfig
from pixquery.ingest.crops import Region, RegionConfig

PHOTO, VIDEO = "photo", "video"


@dataclass(frozen=True)
class MediaItem:
    """One file to (re-)embed, as the plan found it."""

    path: str
    size: int
    mtime_ns: int
    kind: str = PHOTO
    whole: bool = True  # photos: embed the whole picture (this model has no current embedding of it)
    regions: bool = False  # photos: embed its regions too (tiles, detector boxes)
    reuse: bool = False  # the file is unchanged (another model embedded it): keep its detection ids
    read_text: bool = False  # read its text too (OCR on, and not read at this version): a photo's, a video's frames


@dataclass(frozen=True)
class DecodeSettings:
    """Everything a decode worker needs besides the item (sent once per task; small)."""

    preprocess: PreprocessConfig
    draft: bool = True  # JPEG draft mode: decode at the smallest scale that keeps full resolution
    regions: RegionConfig | None = None  # resolved (detector fingerprint filled in), or None: off
    sampling: object | None = None  # video.SamplingConfig (videos only)
    ocr: object | None = None  # ocr.OcrConfig (resolved): items with `read_text` are read, or None


@dataclass
class Piece:
    """What decode made of an item (or of part of a video): crops ready for the encoder, each
    (3, H, W) float32 normalised, with the Region it is."""

    item: MediaItem
    regions: list[Region] = field(default_factory=list)
    pixels: np.ndarray | None = None  # (n, 3, H, W) float32, n == len(regions)
    final: bool = True  # the item's last piece
    sha256: str | None = None  # photos: the content hash of the bytes decoded
    width: int | None = None  # the photo's or video's own size
    height: int | None = None
    failure: str | None = None  # the item failed: nothing of it is written (with `final`)
    problem: str | None = None  # a video that decoded in part: what decoded is kept, this is reported
    info: dict | None = None  # videos (final piece): duration, fps, frame_count, and decode figures
    text: list | None = None  # read (`read_text`), maybe none; None: not read. Photos: ocr.TextBox
    # lines; videos (final piece): video_text.TextRun lines, each with the frames it stays on
    text_seconds: float = 0.0  # the worker's time reading it

    @property
    def n(self) -> int:
        return len(self.regions)


@dataclass
class EmbeddedItem:
    """All of an item, embedded: what the writer stores in one transaction."""

    item: MediaItem
    regions: list[Region]
    vectors: np.ndarray  # (len(regions), dim) float32
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    problem: str | None = None
    info: dict | None = None
    text: list | None = None  # as Piece.text
    text_seconds: float = 0.0


def failed(item: MediaItem, reason: str) -> Piece:
    return Piece(item, failure=reason)
