"""Writes real phone and camera files for tests: HEIC (pillow-heif's encoder, x265), AVIF
(Pillow's own, libavif) and DNG (a Bayer mosaic in a TIFF with Adobe's DNG tags, written with
tifffile, optionally with an embedded preview as cameras store one). LibRaw reads these DNGs as
it reads a camera's."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from photos import photo

IDENTITY_MATRIX = (10000, 10000, 0, 10000, 0, 10000, 0, 10000, 10000, 10000, 0, 10000, 0, 10000, 0, 10000, 10000, 10000)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def heic(path: Path, img: Image.Image | None = None, orientation: int = 1, seed: int = 0, thumbnail: int = 0) -> Path:
    """thumbnail: the long side of an embedded thumbnail (phones store one), 0: none."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    (img or photo((400, 300), seed=seed)).save(
        path, format="HEIF", quality=85, exif=exif_bytes(orientation), thumbnails=[thumbnail] if thumbnail else []
    )
    return path


def avif(path: Path, img: Image.Image | None = None, orientation: int = 1, seed: int = 0) -> Path:
    (img or photo((400, 300), seed=seed)).save(path, format="AVIF", quality=85, exif=exif_bytes(orientation))
    return path


def bayer(rgb: np.ndarray, white: int = 4095) -> np.ndarray:
    """An RGGB mosaic of an RGB picture: what the sensor would have recorded (12-bit)."""
    scale = white / 255.0
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = rgb[0::2, 0::2, 0] * scale
    cfa[0::2, 1::2] = rgb[0::2, 1::2, 1] * scale
    cfa[1::2, 0::2] = rgb[1::2, 0::2, 1] * scale
    cfa[1::2, 1::2] = rgb[1::2, 1::2, 2] * scale
    return cfa


def _jpeg_codec(data, level=None, **kwargs) -> bytes:
    """A JPEG encoder (Pillow's) for tifffile, which otherwise wants the imagecodecs package."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(data).reshape(data.shape[-3:])).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def dng(
    path: Path,
    img: Image.Image | None = None,
    *,
    seed: int = 0,
    orientation: int = 1,
    preview: Image.Image | None = None,
    preview_jpeg: bool = True,
) -> Path:
    """A DNG of `img` (even sides). preview: an embedded preview picture (a JPEG one, as cameras
    store, or uncompressed RGB, as Android's DNGs have), in IFD0 with the sensor data in a SubIFD."""
    import tifffile

    rgb = np.asarray((img or photo((400, 300), seed=seed)).convert("RGB"))
    dng_tags = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "pixquery test camera", True),  # UniqueCameraModel
        (271, "s", 0, "pixquery", True),  # Make
        (272, "s", 0, "test camera", True),  # Model
        (274, "H", 1, orientation, True),  # Orientation
        (50721, "2i", 9, IDENTITY_MATRIX, True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
    ]
    raw_tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50717, "I", 1, 4095, True),  # WhiteLevel
        (50714, "H", 1, 0, True),  # BlackLevel
    ]
    cfa = bayer(rgb)
    with tifffile.TiffWriter(path) as tif:
        if preview is None:
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=dng_tags + raw_tags)
        else:
            pix = np.asarray(preview.convert("RGB"))
            kw = {}
            if preview_jpeg:
                tifffile.TIFF.COMPRESSORS._codecs[7] = _jpeg_codec
                kw = dict(compression=7, rowsperstrip=pix.shape[0])
            tif.write(pix, photometric="rgb", subfiletype=1, subifds=1, extratags=dng_tags, **kw)
            tif.write(cfa, photometric=32803, subfiletype=0, extratags=raw_tags)
    return path


def solid(size, colour) -> Image.Image:
    return Image.new("RGB", size, colour)
