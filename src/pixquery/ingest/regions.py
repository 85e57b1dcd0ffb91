"""Regions: multi-scale tiles and detector boxes of photos and video frames, embedded as detections.

A whole-photo embedding describes the photo's main subject; "a cup on the table" in a wide shot
may not move it at all. Embedding overlapping crops at a few scales (and, for users who have one,
the boxes an object detector finds) makes small things findable, and tells where they are: every
region is a `detection` row with its relative box (x0, y0, x1, y1 in 0..1 of the photo's width and
height) and one `embedding` row per model, added to the ANN index like any photo.

Tiles are square in pixels, so the model's centre crop keeps all of a tile: a grid given as an int
`n` puts n tiles across the photo's short side and as many as needed (with the same overlap) along
the long side (n=2 on a 4:3 photo: 3x2 tiles; on 16:9: 4x2). A grid given as (cols, rows) is used
as is (tiles then have the photo's aspect and lose their sides to the centre crop).

Detections are shared by all models (a box is a box), embeddings are per model. Rows that an index
still refers to cannot be deleted (index_image references them), so replacing a file's regions
"retires" the old rows: their embeddings go (every model's index drops them at its next sync, as
`live_items` no longer lists them) and the rows themselves are deleted by the catalog's
`purge_orphan_detections` once no index refers to them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from pixquery.catalog import Catalog
from pixquery.encoders.base import Encoder, PreprocessConfig
from pixquery.errors import BadImage
from pixquery.ingest.decode import normalize, resize_crop

Box = tuple[float, float, float, float]  # relative x0, y0, x1, y1
FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)
REGION_KINDS = ("tile", "detector")  # detection kinds that are regions of a photo or a frame
SETTING_IMAGE_REGIONS = "image_regions"  # RegionConfig JSON the photo regions were made with


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
    def from_json(cls, text: str | None) -> "RegionConfig | None":
        if not text or text == "null":
            return None
        d = json.loads(text)
        d["grids"] = tuple(g if isinstance(g, int) else tuple(g) for g in d.get("grids", ()))
        return cls(**d)

    def resolved(self) -> "RegionConfig":
        """The same config with the detector's file identity filled in (so a new model file redoes regions)."""
        if not self.detector:
            return self
        import os

        st = os.stat(self.detector)
        return RegionConfig(**{**asdict(self), "detector": os.path.abspath(self.detector),
                               "detector_fingerprint": f"{st.st_size}:{st.st_mtime_ns}"})


def saved_config(catalog: Catalog) -> RegionConfig | None:
    """The region settings this library's photo regions were last made with (None: regions off)."""
    return RegionConfig.from_json(catalog.get_setting(SETTING_IMAGE_REGIONS))


def choose_config(catalog: Catalog, enabled: bool | None = None, detector: str | None = None) -> RegionConfig | None:
    """The region settings for an index run, from the user's flags: `enabled` None keeps the
    library's (so a plain `pixquery index` never turns regions off), False turns them off, True
    turns them on (the saved settings, else the defaults). A detector path turns them on with it."""
    saved = saved_config(catalog)
    if enabled is False:
        return None
    if enabled is None and detector is None:
        return saved
    cfg = saved or RegionConfig()
    if detector is not None:
        cfg = RegionConfig(**{**asdict(cfg), "detector": detector or None, "detector_fingerprint": None})
    return cfg


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


def regions_of(img: Image.Image, config: RegionConfig | None, detector=None, timestamp: float | None = None) -> list[Region]:
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


def encode_pixels(encoder: Encoder, pixels: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """(n, S, S, 3) uint8 crops -> (n, dim) float32 embeddings, in batches."""
    out = []
    cfg = encoder.preprocess_cfg
    for i in range(0, len(pixels), batch_size):
        out.append(encoder.encode_images(normalize(np.stack(pixels[i : i + batch_size]), cfg)))
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), dtype=np.float32)


# -- storing detections -------------------------------------------------------------------


def store_detections(
    catalog: Catalog,
    model_id: int,
    *,
    image_id: int | None = None,
    video_id: int | None = None,
    regions: Sequence[Region],
    vectors: np.ndarray,
    kinds: Sequence[str],
    reuse: bool,
) -> list[int]:
    """Make the detections of `kinds` of one photo or video exactly `regions`, with `vectors` as
    this model's embeddings. Call inside a transaction. Returns the detection ids, in order.

    reuse=True (the file is unchanged and the config the same: another model got here first):
    rows with the same kind, timestamp, box and label keep their id and gain this model's vector,
    so no model's embeddings are lost. reuse=False (the file changed): every old row is retired.
    """
    assert (image_id is None) != (video_id is None)
    assert len(regions) == len(vectors)
    existing: dict[tuple, int] = {}
    for did, kind, ts, box, label in catalog.embedded_detections_of(image_id=image_id, video_id=video_id, kinds=kinds):
        existing.setdefault(Region(kind, box, ts, label).key(), did)
    ids, restale = [], []
    had = catalog.detection_ids_with_embedding(model_id, list(existing.values())) if reuse else set()
    for region, vector in zip(regions, vectors):
        did = existing.pop(region.key(), None) if reuse else None
        if did is None:
            did = catalog.add_detection(image_id=image_id, video_id=video_id, kind=region.kind, box=region.box,
                                        timestamp=region.timestamp, label=region.label)
        elif did in had:
            restale.append(did)
        catalog.put_detection_embedding(model_id, did, vector)
        ids.append(did)
    if not reuse:
        catalog.retire_detections(list(existing.values()))
    if restale:
        catalog.mark_stale(detection_ids=restale)
    return ids


def drop_regions_of_changed(catalog: Catalog, entries: Iterable) -> int:
    """For the lead's per-batch `write()`, BEFORE `upsert_image`, in the same transaction: retire
    the regions of every photo whose file changed (size or mtime differ from the catalog's row), so
    a changed photo never keeps the old photo's regions, even if the run is killed before the
    regions pass. Unchanged photos (re-embedded for another model) keep theirs. `entries`: objects
    with .path, .size, .mtime_ns (scan.FileEntry). Returns how many photos lost regions."""
    changed = []
    for e in entries:
        row = catalog.image_by_path(e.path)
        if row and (row.size, row.mtime_ns) != (e.size, e.mtime_ns):
            changed.append(row.id)
    drop_image_regions(catalog, changed)
    return len(changed)


def drop_image_regions(catalog: Catalog, image_ids: Sequence[int] | None = None) -> None:
    """Retire the regions of these photos (all photos when None). Inside a transaction."""
    catalog.retire_detections(catalog.photo_detection_ids(image_ids))


# -- the photo regions pass ---------------------------------------------------------------


@dataclass
class RegionReport:
    photos: int = 0  # photos whose regions were (re)made
    regions: int = 0  # region embeddings written
    removed: int = 0  # photos whose regions were dropped (regions turned off or config changed)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def images_needing_regions(catalog: Catalog, model_id: int) -> list[tuple[int, str]]:
    """(image id, path) of live photos with no region embedded for this model."""
    return catalog.photos_without_detections(model_id, REGION_KINDS)


def index_image_regions(
    catalog: Catalog,
    encoder: Encoder,
    model_id: int,
    config: RegionConfig | None,
    *,
    batch_size: int = 32,
    detector=None,
    progress=None,
) -> RegionReport:
    """Embed the regions of every live photo that lacks them for this model; with config None, drop
    all photo regions. Call after the photos are embedded, before the index sync. One transaction
    per batch of photos: a killed run keeps what it finished and the next run does the rest.

    A photo that yields no region (smaller than the smallest tile, nothing detected) gets one
    whole-photo region repeating its own vector, which marks it done without costing an encode.
    """
    t0 = time.perf_counter()
    report = RegionReport()
    stage = getattr(progress, "stage", None) or (lambda text: None)
    on_failure = getattr(progress, "failure", None) or (lambda path, reason: None)
    previous = RegionConfig.from_json(catalog.get_setting(SETTING_IMAGE_REGIONS))
    config = config.resolved() if config else None
    if previous != config:
        with catalog.transaction():
            report.removed = catalog.count_photos_with_detections()
            drop_image_regions(catalog)
            catalog.set_setting(SETTING_IMAGE_REGIONS, config.to_json() if config else "null")
    if config is None:
        report.seconds = time.perf_counter() - t0
        return report
    detector = detector if detector is not None else make_detector(config)
    todo = images_needing_regions(catalog, model_id)
    if not todo:
        report.seconds = time.perf_counter() - t0
        return report
    from pixquery.ingest.decode import load_image

    cfg = encoder.preprocess_cfg
    pending: list[tuple[int, list[Region], list[np.ndarray]]] = []
    n_pixels = 0
    stage(f"regions of {len(todo)} photo(s)")
    last_stage = time.monotonic()

    def flush():
        nonlocal n_pixels
        if not pending:
            return
        flat = [p for _, _, pix in pending for p in pix]
        vectors = encode_pixels(encoder, flat, batch_size)
        with catalog.transaction():
            at = 0
            for image_id, regions, pix in pending:
                if pix:
                    vecs = vectors[at : at + len(pix)]
                    at += len(pix)
                else:  # nothing to embed: the marker region repeats the photo's own vector
                    own = catalog.image_embedding(model_id, image_id)
                    if own is None:
                        continue
                    regions, vecs = [Region("tile")], own[None]
                store_detections(catalog, model_id, image_id=image_id, regions=regions, vectors=vecs,
                                 kinds=REGION_KINDS, reuse=True)
                report.regions += len(regions)
                report.photos += 1
        pending.clear()
        n_pixels = 0

    for n, (image_id, path) in enumerate(todo, 1):
        try:
            img = load_image(path)
            regions = regions_of(img, config, detector)
            pixels = [region_pixels(img, r, cfg) for r in regions]
        except BadImage as e:
            report.failed.append((path, e.reason))
            on_failure(path, e.reason)
            continue
        except Exception as e:  # a detector or codec bug must not stop the run
            reason = f"regions: unexpected {type(e).__name__}: {e}"
            report.failed.append((path, reason))
            on_failure(path, reason)
            continue
        pending.append((image_id, regions, pixels))
        n_pixels += len(pixels)
        if n_pixels >= batch_size * 4:
            flush()
        if time.monotonic() - last_stage > 15.0:
            last_stage = time.monotonic()
            stage(f"regions of photos: {n}/{len(todo)}")
    flush()
    report.seconds = time.perf_counter() - t0
    return report


__all__ = [
    "Box", "FULL_BOX", "REGION_KINDS", "RegionConfig", "saved_config", "choose_config", "Region", "RegionReport", "tiles", "square_box", "crop",
    "regions_of", "region_pixels", "encode_pixels", "make_detector", "store_detections",
    "drop_regions_of_changed", "drop_image_regions", "images_needing_regions", "index_image_regions",
]
