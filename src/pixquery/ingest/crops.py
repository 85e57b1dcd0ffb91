"""Crops: the pictures to embed of one decoded photo or video frame, all cut from the same pixels.

A pure step (no I/O, no catalog, no encoder): the whole picture, plus, when regions are on, its
multi-scale tiles and the boxes an object detector finds, each resized and cropped exactly as the
model's preprocessing does. It runs inside the decode workers, so a photo is decoded once and only
model-size pixels travel between processes.

Tiles are square in pixels, so the model's centre crop keeps all of a tile: a grid given as an int
`n` puts n tiles across the photo's short side and as many as needed (with the same overlap) along
the long side (n=2 on a 4:3 photo: 3x2 tiles; on 16:9: 4x2). A grid given as (cols, rows) is used
as is (tiles then have the photo's aspect and lose their sides to the centre crop). A detector's
box is grown to a square around its centre first, so the crop keeps all of the object.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from pixquery.encoders.base import PreprocessConfig
from pixquery.ingest.decode import resize_crop

Box = tuple[float, float, float, float]  # relative x0, y0, x1, y1
FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)
WHOLE = "whole"  # the kind of a photo's own picture: stored as the photo's embedding, not a detection
REGION_KINDS = ("tile", "detector")  # detection kinds that are regions of a photo or a frame


# -- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionConfig:
    """Which regions to embed. The default: tiles at 2 and 3 across the short side, 25% overlap."""

    grids: tuple = (2, 3)  # each an int n (square tiles, n across the short side) or (cols, rows)
    overlap: float = 0.25  # fraction of a tile shared with its neighbour
    min_pixels: int = 48  # skip a grid whose tiles would be smaller than this (upscaled mush)
    detector: str | None = None  # path of an ONNX detector (see pixquery.ingest.detector)
    detector_fingerprint: str | None = None  # set by `resolved()`: its size and mtime
    min_score: float = 0.3  # detector boxes scoring below this are ignored
    max_detections: int = 20  # at most this many detector boxes per photo / frame

    def __post_init__(self):
        grids = tuple(g if isinstance(g, int) else tuple(int(x) for x in g) for g in self.grids)
        for g in grids:
            n = (g,) if isinstance(g, int) else g
            if len(n) not in (1, 2) or any(x < 1 for x in n):
                raise ValueError(f"a grid is an int >= 1 or (cols, rows), not {g!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), not {self.overlap}")
        object.__setattr__(self, "grids", grids)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> RegionConfig | None:
        if not text or text == "null":
            return None
        d = json.loads(text)
        d["grids"] = tuple(g if isinstance(g, int) else tuple(g) for g in d.get("grids", ()))
        return cls(**d)

    def resolved(self) -> RegionConfig:
        """The same config with the detector's file identity filled in (so a new model file redoes regions)."""
        if not self.detector:
            return self
        import os

        st = os.stat(self.detector)
        return RegionConfig(
            **{
                **asdict(self),
                "detector": os.path.abspath(self.detector),
                "detector_fingerprint": f"{st.st_size}:{st.st_mtime_ns}",
            }
        )


# -- geometry -----------------------------------------------------------------------------


def _count(length: float, side: float, overlap: float) -> int:
    if length <= side * (1 + 1e-9):
        return 1
    return int(math.ceil((length - side) / (side * (1.0 - overlap)) - 1e-9)) + 1


def _starts(length: float, side: float, n: int) -> list[float]:
    if n == 1:
        return [max(0.0, (length - side) / 2)]
    step = (length - side) / (n - 1)
    return [i * step for i in range(n)]


def tiles(width: int, height: int, grids: Iterable = (2, 3), overlap: float = 0.25, min_pixels: int = 48) -> list[Box]:
    """Overlapping tiles of a width x height picture at each grid, as relative boxes.

    An int grid n: square tiles of side short/(n - (n-1)*overlap), n across the short side and
    enough along the long side to cover it with at least `overlap`, spread evenly. A (cols, rows)
    grid: exactly cols x rows tiles of the picture's aspect. Grids whose tiles would be smaller
    than `min_pixels` are skipped.
    """
    out: list[Box] = []
    w, h = float(width), float(height)
    for g in grids:
        if isinstance(g, int):
            side = min(w, h) / (g - (g - 1) * overlap)
            tw = th = side
        else:
            cols, rows = g
            tw, th = w / (cols - (cols - 1) * overlap), h / (rows - (rows - 1) * overlap)
        if min(tw, th) < min_pixels:
            continue
        xs = _starts(w, tw, _count(w, tw, overlap))
        ys = _starts(h, th, _count(h, th, overlap))
        for y in ys:
            for x in xs:
                out.append(_clip((x / w, y / h, (x + tw) / w, (y + th) / h)))
    return out


def _clip(box: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in box)
    return (round(x0, 6), round(y0, 6), round(x1, 6), round(y1, 6))


def square_box(box: Box, width: int, height: int) -> Box:
    """The box grown to a square in pixels around its centre (clipped to the picture): a detector's
    tall or wide box keeps all of the object, plus context, through the model's centre crop."""
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    side = min(max(x1 - x0, y1 - y0), width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    nx0 = min(max(0.0, cx - side / 2), width - side)
    ny0 = min(max(0.0, cy - side / 2), height - side)
    return _clip((nx0 / width, ny0 / height, (nx0 + side) / width, (ny0 + side) / height))


def crop(img: Image.Image, box: Box, cfg: PreprocessConfig) -> np.ndarray:
    """The region `box` of `img`, preprocessed like a photo: (size, size, 3) uint8."""
    w, h = img.size
    px = (int(round(box[0] * w)), int(round(box[1] * h)), int(round(box[2] * w)), int(round(box[3] * h)))
    px = (px[0], px[1], max(px[2], px[0] + 1), max(px[3], px[1] + 1))
    return resize_crop(img.crop(px), cfg)


# -- regions of one picture ---------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """One detection to store: what it is, where, and (for videos) when."""

    kind: str  # 'frame' | 'tile' | 'detector'
    box: Box = FULL_BOX
    timestamp: float | None = None
    label: str | None = None
    score: float | None = None  # detector confidence (not stored)

    def key(self) -> tuple:
        ts = None if self.timestamp is None else round(float(self.timestamp), 3)
        return (self.kind, ts, tuple(round(float(v), 4) for v in self.box), self.label)


def regions_of(
    img: Image.Image, config: RegionConfig | None, detector=None, timestamp: float | None = None
) -> list[Region]:
    """The tile and detector regions of one picture (not the whole picture itself)."""
    if config is None:
        return []
    w, h = img.size
    out = [Region("tile", b, timestamp) for b in tiles(w, h, config.grids, config.overlap, config.min_pixels)]
    if detector is not None:
        found = [d for d in detector.detect(img) if d.score >= config.min_score]
        found.sort(key=lambda d: -d.score)
        for d in found[: config.max_detections]:
            out.append(Region("detector", _clip(d.box), timestamp, d.label, d.score))
    return out


def region_pixels(img: Image.Image, region: Region, cfg: PreprocessConfig) -> np.ndarray:
    """Model-ready uint8 pixels of a region (detector boxes are squared first, see square_box)."""
    box = square_box(region.box, *img.size) if region.kind == "detector" else region.box
    return crop(img, box, cfg)


def make_detector(config: RegionConfig | None):
    """The Detector a config names, or None."""
    if config is None or not config.detector:
        return None
    from pixquery.ingest.detector import load_detector

    return load_detector(config.detector)


_DETECTORS: dict = {}  # (path, fingerprint) -> Detector, one per process (workers load it once)


def detector_for(config: RegionConfig | None):
    """The config's detector, loaded once per process."""
    if config is None or not config.detector:
        return None
    key = (config.detector, config.detector_fingerprint)
    if key not in _DETECTORS:
        _DETECTORS[key] = make_detector(config)
    return _DETECTORS[key]


def draft_size(cfg: PreprocessConfig, config: RegionConfig | None) -> int | None:
    """The smallest picture size (short side) that still gives every crop full resolution: the
    model's size for the whole picture, more for tiles (a tile of grid n is 1/(n - (n-1)*overlap)
    of the short side). None (decode in full) when a detector looks for small boxes."""
    if config is None:
        return cfg.size
    if config.detector:
        return None
    factor = 1.0
    for g in config.grids:
        n = g if isinstance(g, int) else max(g)
        factor = max(factor, n - (n - 1) * config.overlap)
    return int(math.ceil(cfg.size * factor))


@dataclass
class Crop:
    """One picture for the encoder: what it is (kind, box, time) and its (S, S, 3) uint8 pixels."""

    region: Region
    pixels: np.ndarray


def crops_of(
    img: Image.Image,
    cfg: PreprocessConfig,
    *,
    whole: bool = True,
    regions: RegionConfig | None = None,
    timestamp: float | None = None,
    whole_kind: str = WHOLE,
) -> list[Crop]:
    """The crops of one picture: the whole picture (kind `whole_kind`: WHOLE for a photo, 'frame'
    for a video frame) when `whole`, then its regions when `regions` is a config. A picture too
    small for any tile, with nothing detected, gets one whole-picture 'tile' that marks it done."""
    out = [Crop(Region(whole_kind, FULL_BOX, timestamp), resize_crop(img, cfg))] if whole else []
    if regions is not None:
        found = regions_of(img, regions, detector_for(regions), timestamp)
        out += [Crop(r, region_pixels(img, r, cfg)) for r in found]
        if not found and whole_kind == WHOLE:
            out.append(Crop(Region("tile", FULL_BOX, timestamp), out[0].pixels if whole else resize_crop(img, cfg)))
    return out
