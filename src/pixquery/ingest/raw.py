"""Camera RAW files -> pixels, through LibRaw (rawpy).

CLIP looks at a few hundred pixels, so demosaicing 24 megapixels for it is waste. Every camera
stores a JPEG preview (often full-size) in its RAW files: when that preview is at least as large
as the crops need (`draft_size`, the model's input side or what the region tiles need) and has the
picture's shape, it is used, the sensor data is never unpacked, and the preview is JPEG-draft
decoded like any JPEG. Otherwise LibRaw demosaics at half size (each 2x2 Bayer block becomes one
pixel: 4x less work, no interpolation) or, when even that is too small, at full size.

The camera's orientation (LibRaw's `flip`) is applied either way; the size guard checks the
sensor's size before anything is unpacked.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from pixquery.errors import BadImage
from pixquery.ingest import formats

# LibRaw's `flip` (dcraw's: bit 2 transpose, bit 1 flip rows, bit 0 flip columns) -> the PIL
# transpose that shows the picture upright (the same as the EXIF orientation it came from).
_FLIP_TO_TRANSPOSE = {
    1: Image.Transpose.FLIP_LEFT_RIGHT,  # EXIF 2
    2: Image.Transpose.FLIP_TOP_BOTTOM,  # EXIF 4
    3: Image.Transpose.ROTATE_180,  # EXIF 3
    4: Image.Transpose.TRANSPOSE,  # EXIF 5
    5: Image.Transpose.ROTATE_90,  # EXIF 8
    6: Image.Transpose.ROTATE_270,  # EXIF 6
    7: Image.Transpose.TRANSVERSE,  # EXIF 7
}
ASPECT_TOLERANCE = 0.02  # a preview with another shape (letterboxed, cropped) is not used


def _upright(img: Image.Image, flip: int) -> Image.Image:
    op = _FLIP_TO_TRANSPOSE.get(flip)
    return img.transpose(op) if op is not None else img


def _same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return abs(a[0] / a[1] - b[0] / b[1]) <= ASPECT_TOLERANCE * (b[0] / b[1])


def _preview(raw, rawpy, sensor: tuple[int, int], draft_size: int, max_pixels: int, name) -> Image.Image | None:
    """The embedded preview, decoded, as stored (not yet turned upright), when it is large enough
    and has the picture's shape; else None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None  # a damaged preview: the sensor data may still be fine
    if thumb.format == rawpy.ThumbFormat.JPEG:
        from pixquery.ingest.decode import load_pillow

        try:
            img, w, h = load_pillow(io.BytesIO(thumb.data), draft_size, max_pixels, name, rotate=False)
        except BadImage:
            return None
    else:  # BITMAP: uncompressed RGB (Android's DNGs), already an array
        img = Image.fromarray(np.ascontiguousarray(thumb.data[..., :3]).astype(np.uint8))
        w, h = img.size
    if min(w, h) < draft_size:
        return None
    if _same_shape((w, h), sensor):
        return img
    return None  # rotated already, letterboxed or cropped: not trusted to match the photo


def load_raw(source, draft_size: int | None, max_pixels: int, name) -> tuple[Image.Image, int, int]:
    """A RAW file (path, bytes or binary file) -> (upright RGB image, width, height): the photo's
    own size, orientation applied. draft_size None: a full-size demosaic. Raises BadImage."""
    rawpy = formats.rawpy_module()
    if isinstance(rawpy, str):
        raise BadImage(name, formats.not_decodable(formats.RAW, f"rawpy {rawpy}"))
    raw = rawpy.RawPy()
    try:
        if isinstance(source, (str, os.PathLike)):
            raw.open_file(os.fspath(source))
        else:
            data = source if isinstance(source, bytes) else source.read()
            if not data:
                raise BadImage(name, "empty file (0 bytes)")
            raw.open_buffer(io.BytesIO(data))
        s = raw.sizes
        sensor = (s.width, s.height)
        if s.width * s.height > max_pixels or s.raw_width * s.raw_height > max_pixels:
            raise BadImage(
                name, f"RAW image is {s.raw_width}x{s.raw_height} pixels, above the {max_pixels:,}-pixel limit"
            )
        if s.width <= 0 or s.height <= 0:
            raise BadImage(name, "RAW file with no image in it")
        flip = s.flip
        w, h = (s.height, s.width) if flip & 4 else (s.width, s.height)
        if draft_size:
            img = _preview(raw, rawpy, sensor, draft_size, max_pixels, name)
            if img is not None:
                return _upright(img.convert("RGB") if img.mode != "RGB" else img, flip), w, h
        half = bool(draft_size) and min(s.width, s.height) // 2 >= draft_size
        raw.unpack()
        # postprocess applies the camera's flip itself; camera white balance as the camera showed it.
        rgb = raw.postprocess(half_size=half, use_camera_wb=True, output_bps=8)
        return Image.fromarray(rgb), w, h
    except BadImage:
        raise
    except rawpy.LibRawFileUnsupportedError:
        raise BadImage(name, "not a RAW file LibRaw can read (unsupported or corrupt)") from None
    except rawpy.LibRawTooBigError:
        raise BadImage(name, "RAW image too large for LibRaw's memory limit") from None
    except (rawpy.LibRawError, OSError, ValueError, MemoryError) as e:
        raise BadImage(name, f"cannot decode RAW: {e}") from None
    finally:
        raw.close()
