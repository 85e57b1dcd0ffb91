"""The OCR stage: text in photos, read with RapidOCR (PP-OCRv6 small detection + recognition as
ONNX models that ship inside the `rapidocr` wheel: offline, no download), into the catalog.
ocr_engines.py has the engines; bench/results/ocr-accuracy.md why this one.

Opt-in per library (`pixquery index PATH --ocr`, remembered like regions). The photos an index
run embeds are read in their decode workers (ingest/workers.py `read_text`): detection on the
pixels already decoded for the crops, beside the encoder, and the writer stores the lines with the
embedding. `read_photos` (this module) then reads, in this process, the photos the run did not
decode: OCR turned on or its settings changed for photos embedded before. Which photos are read
at their current file version with the current settings is in the catalog (`ocr_scan`), so a
re-run reads only new and changed photos.

Cost is what decides the design. Text detection (a DB segmentation net over the whole picture)
runs on every photo and is most of the cost; recognition runs only on the boxes found, so photos
with no text pay for detection alone. Detection sees the photo scaled down to `det_side` pixels
on its long side (480 by default: PP-OCR's default upscales a photo's short side to 736, ~8x the
pixels and the cost; bench/results/ocr-accuracy.md has recall and cost for 480 and 960);
recognition reads each box, lengthened along its line (`extend`), from the photo decoded only as
big as the smallest box needs (`rec_side` at most), so small text keeps its pixels. The angle classifier
(upside-down lines) is skipped: photo text is near upright, and it would cost a pass per box.

Video frames are read by ingest/video_text.py (the same TextReader, a line stored once per run of
frames it stays on).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from importlib import metadata

import numpy as np
from PIL import Image

from pixquery.catalog import Catalog
from pixquery.catalog.text import SETTING_OCR
from pixquery.errors import BadImage, PixqueryError
from pixquery.ingest.decode import load_image
from pixquery.ingest.ocr_engines import ENGINES, INSTALL_HINT, make_engine

ENGINE = "rapidocr"  # PP-OCRv6 small (ocr_engines.py); measured against PP-OCRv4 in bench/results/ocr-accuracy.md


@dataclass(frozen=True)
class OcrConfig:
    # Long side, in pixels, of the picture the text detector sees: what OCR costs on every photo.
    # 480 keeps it below the cost of embedding the photo (bench/results/ocr-accuracy.md); 960
    # finds smaller text (below ~3% of the photo's width) at ~4x the cost.
    det_side: int = 480
    rec_side: int = 2000  # long side of the picture the recognised boxes are cut from
    det_thresh: float = 0.2  # text-pixel probability (PP-OCR's default 0.3): fainter text is found
    box_thresh: float = 0.4  # a box's mean probability to keep it (default 0.5)
    min_score: float = 0.5  # lines read with a lower confidence are dropped
    unclip: float = 1.6  # how far a detected text region is grown into its box (PP-OCR's default)
    # "none": detect on the photo as it is; "clahe": on a copy with its luminance contrast
    # equalised locally (CLAHE), so text a few levels off its background stands out; "both": on
    # the two, boxes merged (twice the detection cost). bench/results/ocr-accuracy.md compares them.
    contrast: str = "none"
    # Each box found, before recognition: "none" as it is; "stretch": its luminance stretched to
    # the full range (faint text on a plain background reads like printed text). Costs ~nothing:
    # boxes only.
    rec_contrast: str = "none"
    # Each box is lengthened by this many times its height at both ends of its line before
    # recognition: faint text is often found only in part (the letters over a background of
    # their own colour drop out), and the recogniser reads the faint ends a box cut off.
    extend: float = 1.0
    engine: str = ENGINE  # with its version, once `resolved()`: a new engine reads every photo again

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> OcrConfig | None:
        if not text or text == "null":
            return None
        return cls(**json.loads(text))

    def resolved(self) -> OcrConfig:
        """The same settings naming the installed engine's version."""
        if "==" in self.engine:
            return self
        if self.engine not in ENGINES:
            raise PixqueryError(f"unknown OCR engine {self.engine!r}: one of {', '.join(ENGINES)}")
        version = installed_version(self.engine)
        if version is None:
            raise PixqueryError(f"--ocr needs {self.engine}, which is not installed: {INSTALL_HINT}")
        return OcrConfig(**{**asdict(self), "engine": f"{self.engine}=={version}"})


@dataclass(frozen=True)
class TextBox:
    """A line of text read in a picture: the text, its box (relative x0, y0, x1, y1) and the
    recogniser's confidence (0..1)."""

    text: str
    box: tuple[float, float, float, float]
    score: float


class TextReader:
    """Reads the text in a picture. Loads the ONNX sessions once (~0.6 s); not thread-safe."""

    def __init__(self, config: OcrConfig | None = None, *, threads: int | None = None):
        """threads: ONNX Runtime's threads per model (None: its default, every core); the decode
        workers use 1 each, as many workers as cores running side by side."""
        self.config = config or OcrConfig()
        if self.config.contrast not in CONTRASTS:
            raise PixqueryError(f"OCR contrast must be one of {', '.join(CONTRASTS)}, not {self.config.contrast!r}")
        if self.config.rec_contrast not in ("none", "stretch"):
            raise PixqueryError(f"OCR rec_contrast must be none or stretch, not {self.config.rec_contrast!r}")
        c = self.config
        self._engine = make_engine(
            c.engine,
            det_side=c.det_side,
            det_thresh=c.det_thresh,
            box_thresh=c.box_thresh,
            unclip=c.unclip,
            threads=threads,
        )

    def detect(self, image: Image.Image) -> np.ndarray:
        """Text boxes as quadrilaterals (n, 4, 2) in relative coordinates, reading order."""
        small = _scaled(image, self.config.det_side)
        rgb = np.asarray(small)
        quads = []
        if self.config.contrast in ("none", "both"):
            quads.append(self._detect_pixels(rgb))
        if self.config.contrast in ("clahe", "both"):
            found = self._detect_pixels(_equalised(rgb))
            if self.config.contrast == "both" and len(quads[0]):
                found = found[~_overlapping(found, quads[0])]
            quads.append(found)
        boxes = np.concatenate(quads) if len(quads) > 1 else quads[0]
        if not len(boxes):
            return np.zeros((0, 4, 2), np.float32)
        boxes = np.asarray(self._engine.sort(boxes), dtype=np.float32)
        return boxes / np.array([small.width, small.height], dtype=np.float32)

    def _detect_pixels(self, rgb: np.ndarray) -> np.ndarray:
        return self._engine.detect(np.ascontiguousarray(rgb[:, :, ::-1]))

    def read(self, image: Image.Image) -> list[TextBox]:
        """The lines of text in an RGB picture, top to bottom; detection, then recognition of the
        boxes found only."""
        quads = self.detect(image)
        if not len(quads):
            return []
        return self.recognise(image, quads)

    def recognition_short_side(self, quads: np.ndarray, size: tuple[int, int], own_side: int) -> int:
        """The short side (pixels) a picture of this photo needs for its smallest box (relative
        quadrilaterals) to be REC_TEXT_PX tall, the height the recogniser reads lines at (a bigger
        decode adds nothing to it), within `rec_side` and the photo's own long side `own_side`.
        A decode for recognition costs as much as the detection itself on a 12 MP photo: false
        boxes on textures, common, are mostly tall enough in the picture already decoded."""
        w, h = size
        tall = _heights(quads * np.array([w, h], dtype=np.float32))  # in pixels of `size`
        scale = REC_TEXT_PX / max(float(tall.min()), 1.0)
        longest = min(self.config.rec_side, own_side)
        scale = min(scale, longest / max(w, h))
        return int(np.ceil(min(w, h) * scale))

    def recognise(self, image: Image.Image, quads: np.ndarray) -> list[TextBox]:
        """The text in each box found by `detect` (relative quadrilaterals), read from `image`
        (which may be a bigger decode of the same photo than the one detection saw)."""
        big = _scaled(image, self.config.rec_side)
        bgr = np.ascontiguousarray(np.asarray(big)[:, :, ::-1])
        pixels = (quads * np.array([big.width, big.height], dtype=np.float32)).astype(np.float32)
        if self.config.extend:
            pixels = _lengthened(pixels, self.config.extend, big.width, big.height)
        crops = self._engine.crop(bgr, pixels)
        if self.config.rec_contrast == "stretch":
            crops = [_stretched(c) for c in crops]
        texts = self._engine.recognise(crops)
        out = []
        for quad, (text, score) in zip(quads, texts):
            text = " ".join(str(text).split())
            # One character is no line anyone can search for (a query word has 3 or more); PP-OCRv6's
            # detector sometimes boxes a whole textured picture, read as a lone confident letter.
            if len(text.replace(" ", "")) < 2 or float(score) < self.config.min_score:
                continue
            x0, y0 = np.clip(quad.min(0), 0.0, 1.0)
            x1, y1 = np.clip(quad.max(0), 0.0, 1.0)
            out.append(TextBox(text, (float(x0), float(y0), float(x1), float(y1)), float(score)))
        return out


CONTRASTS = ("none", "clahe", "both")
REC_TEXT_PX = 48  # PP-OCR's recognisers read a line scaled to 48 pixels tall


def _equalised(rgb: np.ndarray) -> np.ndarray:
    """The picture with its luminance equalised locally (CLAHE on L of L*a*b*, 8x8 tiles), colour
    kept: faint text (a few levels off its background) gets the contrast the detector needs."""
    import cv2  # comes with rapidocr

    lab = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _lengthened(quads: np.ndarray, factor: float, width: int, height: int) -> np.ndarray:
    """Pixel quadrilaterals (n, 4, 2; top-left, top-right, bottom-right, bottom-left) lengthened
    along their top edge's direction by `factor` x their height at each end, kept in the picture."""
    along = quads[:, 1] - quads[:, 0]
    along /= np.linalg.norm(along, axis=1, keepdims=True) + 1e-6
    step = along * (factor * _heights(quads))[:, None]
    out = quads + np.stack([-step, step, step, -step], axis=1)
    out[..., 0] = out[..., 0].clip(0, width - 1)
    out[..., 1] = out[..., 1].clip(0, height - 1)
    return out.astype(np.float32)


def _heights(quads: np.ndarray) -> np.ndarray:
    """Each quadrilateral's height (n, 4, 2; top-left, top-right, bottom-right, bottom-left): the
    mean of its left and right edges."""
    return (np.linalg.norm(quads[:, 3] - quads[:, 0], axis=1) + np.linalg.norm(quads[:, 2] - quads[:, 1], axis=1)) / 2


def _stretched(bgr: np.ndarray) -> np.ndarray:
    """A box's pixels with their luminance range (2nd to 98th percentile) stretched to 0..255,
    colour kept as offsets: what was 40 levels apart becomes ~255 apart."""
    grey = bgr.astype(np.float32).mean(axis=2)
    lo, hi = np.percentile(grey, (2, 98))
    if hi - lo < 8:  # flat: nothing to stretch
        return bgr
    out = (bgr.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(out, 0, 255).astype(np.uint8)


def _overlapping(quads: np.ndarray, others: np.ndarray) -> np.ndarray:
    """For each quadrilateral of `quads`, whether its bounding box overlaps one of `others` by
    more than half of the smaller box (the same text found twice)."""
    a0, a1 = quads.min(1), quads.max(1)
    b0, b1 = others.min(1), others.max(1)
    lo = np.maximum(a0[:, None], b0[None])
    hi = np.minimum(a1[:, None], b1[None])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area_a = np.prod(a1 - a0, axis=1)[:, None]
    area_b = np.prod(b1 - b0, axis=1)[None]
    return (inter > 0.5 * np.minimum(area_a, area_b)).any(axis=1)


def _scaled(image: Image.Image, long_side: int) -> Image.Image:
    w, h = image.size
    if max(w, h) <= long_side:
        return image
    f = long_side / max(w, h)
    return image.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR)


# -- settings -----------------------------------------------------------------------------


def installed_version(engine: str) -> str | None:
    """The installed version of the package of an engine setting ("name" or "name==version"),
    None when it is not installed."""
    try:
        return metadata.version(engine.split("==")[0])
    except metadata.PackageNotFoundError:
        return None


def engine_installed(engine: str) -> bool:
    return installed_version(engine) is not None


def saved_config(catalog: Catalog) -> OcrConfig | None:
    return OcrConfig.from_json(catalog.get_setting(SETTING_OCR))


def choose_config(catalog: Catalog, enabled: bool | OcrConfig | None) -> OcrConfig | None:
    """The OCR settings for an index run: None keeps the library's (a plain `pixquery index`
    never turns OCR off), False turns it off, True turns it on (saved settings, else defaults)."""
    if isinstance(enabled, OcrConfig):
        return enabled
    saved = saved_config(catalog)
    if saved is not None and not engine_installed(saved.engine):
        # Read with an engine pixquery[ocr] no longer installs (PP-OCRv4's rapidocr-onnxruntime,
        # before PP-OCRv6): the current one reads the library's photos again.
        saved = replace(saved, engine=ENGINE)
    if enabled is None:
        return saved
    if enabled is False:
        return None
    return saved or OcrConfig()


def apply_config(catalog: Catalog, config: OcrConfig | None) -> None:
    """Make `config` the library's OCR settings; off forgets every photo's text. Photos read with
    other settings are read again by the next `read_photos` (their ocr_scan.config differs)."""
    if saved_config(catalog) == config:
        return
    with catalog.transaction():
        if config is None:
            catalog.drop_all_text()
        catalog.set_setting(SETTING_OCR, config.to_json() if config else "null")


# -- the stage ----------------------------------------------------------------------------


@dataclass
class OcrReport:
    photos: int = 0  # photos read in this run
    lines: int = 0  # lines of text found in them
    seconds: float = 0.0
    failed: list = None  # (path, reason)


def read_photos(
    catalog: Catalog,
    config: OcrConfig,
    *,
    reader: TextReader | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    batch: int = 16,
) -> OcrReport:
    """Read the text of every live photo not read at its current version with `config` (resolved)
    and store it, one transaction per `batch` photos (a killed run keeps what it committed).
    A photo that cannot be decoded is reported (the embedding stage reported it too) and skipped."""
    key = config.to_json()
    todo = catalog.photos_to_read(key)
    report = OcrReport(failed=[])
    if not todo:
        return report
    reader = reader or TextReader(config)
    t0 = time.perf_counter()
    done: list[tuple[int, list[TextBox], int, int, float]] = []

    def flush() -> None:
        with catalog.transaction():
            for image_id, boxes, size, mtime_ns, seconds in done:
                catalog.replace_photo_text(
                    image_id,
                    [(b.text, b.box, b.score) for b in boxes],
                    size=size,
                    mtime_ns=mtime_ns,
                    config=key,
                    seconds=seconds,
                )
        report.photos += len(done)
        report.lines += sum(len(d[1]) for d in done)
        done.clear()

    for n, (image_id, path, size, mtime_ns) in enumerate(todo, 1):
        t = time.perf_counter()
        try:
            # JPEG draft: decode at the smallest scale that still gives recognition its pixels.
            image = load_image(path, draft_size=config.rec_side // 2)
            boxes = reader.read(image)
        except BadImage as e:
            report.failed.append((path, e.reason))
            if on_failure:
                on_failure(path, e.reason)
        except Exception as e:  # an engine bug on one photo must not stop a 100,000-photo run
            reason = f"text reading failed: {type(e).__name__}: {e}"
            report.failed.append((path, reason))
            if on_failure:
                on_failure(path, reason)
        else:
            done.append((image_id, boxes, size, mtime_ns, time.perf_counter() - t))
        if len(done) >= batch:
            flush()
        if on_progress:
            on_progress(n, len(todo))
    if done:
        flush()
    report.seconds = time.perf_counter() - t0
    return report


__all__ = [
    "OcrConfig",
    "TextBox",
    "TextReader",
    "OcrReport",
    "SETTING_OCR",
    "saved_config",
    "choose_config",
    "apply_config",
    "read_photos",
]
