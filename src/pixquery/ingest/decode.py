"""File -> pixels the model can take: safe decoding and open_clip-identical preprocessing.

Decoding is where real photo collections hurt: truncated files, CMYK and 16-bit images, palette
PNGs with transparency, decompression bombs, phone photos rotated by an EXIF tag. Every failure
becomes a `BadImage` naming the file and the reason, so one bad file never stops a run.

Preprocessing follows open_clip's eval transform (Resize shortest side with bicubic ->
CenterCrop -> ToTensor -> Normalize); tests compare it with open_clip's own transform. Workers
return uint8 pixels (4x less to pickle than float32); `normalize` turns a whole batch into the
model's float input in one numpy step in the consumer.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pixquery.encoders.base import PreprocessConfig
from pixquery.errors import BadImage
from pixquery.ingest import formats

# PIL refuses images above 2x its MAX_IMAGE_PIXELS; we decide ourselves (before decoding) so
# the reason names the file and its size. 178 MP is far above any camera (a 108 MP phone fits).
MAX_PIXELS = 178_956_970


@contextmanager
def open_header(source) -> Iterator[Image.Image]:
    """Open an image (a path or a binary file) reading only its header: nothing is decoded until
    `load()`. Like `Image.open`, but without PIL's decompression-bomb check, so that the caller
    decides on the size itself (and names it); the caller must check `img.size` before `load()`.

    PIL's check reads the process-wide `Image.MAX_IMAGE_PIXELS`. Switching it off around
    `Image.open` (set to None, then restore) is a race between threads: another thread can see it
    off, or restore None and leave the guard off for the whole process. So this runs PIL's format
    plugins itself and never writes PIL's (or the warnings module's) state. A path is closed when
    the block ends; a file object given is left open.
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        filename = os.fsdecode(source)
        with open(filename, "rb") as fp:
            yield _identify(fp, filename)
        return
    fp = source
    try:
        fp.seek(0)
    except (AttributeError, io.UnsupportedOperation):
        fp = io.BytesIO(fp.read())
    yield _identify(fp, "")


class PluginMissing(Exception):
    """The file is of a format whose decoder plugin is not installed here (the message says which)."""


def _identify(fp, filename: str) -> Image.Image:
    """The core of `Image.open`: the first registered format plugin that accepts the file."""
    prefix = fp.read(16)
    heif_problem = None
    if prefix[4:8] == b"ftyp" and prefix[8:12] in formats.HEIF_BRANDS:
        heif_problem = formats.heif_opener()  # pillow-heif's plugin, registered on the first HEIF seen
    tried = set()
    for load_plugins in (Image.preinit, Image.init):  # the common formats first, then all
        load_plugins()
        for fmt in list(Image.ID):
            if fmt in tried:
                continue
            tried.add(fmt)
            factory, accept = Image.OPEN[fmt]
            try:
                if accept is not None:
                    verdict = accept(prefix)
                    if not verdict or isinstance(verdict, str):  # a str: "looks like it, but unsupported"
                        continue
                fp.seek(0)
                return factory(fp, filename)
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue  # not this format after all (as Image.open treats these)
    if heif_problem:
        raise PluginMissing(formats.not_decodable(formats.HEIF, f"pillow-heif {heif_problem}"))
    raise UnidentifiedImageError(f"cannot identify image file {filename or fp!r}")


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W, 3) uint8, already resized and cropped for the model
    width: int  # the photo's own size, after EXIF rotation
    height: int


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: convert("RGB") would clip everything above 255 to white.
        arr = np.asarray(img, dtype=np.uint32)
        shift = 8 if arr.max(initial=0) > 255 else 0
        return Image.fromarray((arr >> shift).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels have undefined colour; composite over white, as a viewer shows them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, CMYK, YCbCr, 1, F ...


def load_image(source, draft_size: int | None = None, max_pixels: int = MAX_PIXELS, name=None) -> Image.Image:
    """Open, guard, (draft-)decode, EXIF-rotate and convert to RGB. Raises BadImage."""
    return _load(source, draft_size, max_pixels, name)[0]


def _load(source, draft_size: int | None, max_pixels: int, name) -> tuple[Image.Image, int, int]:
    """load_image plus the photo's own size (EXIF rotation applied, before any draft scaling)."""
    name = name or source
    # Camera RAW goes to LibRaw: most RAW formats are TIFF inside, and Pillow would show their
    # first TIFF image (a thumbnail). Known by the file name's extension, or, for a file without
    # one (an upload, a server thumbnail), by its first bytes or, for a DNG, its DNGVersion tag.
    if formats.is_raw_name(name) or _starts_like_raw(source):
        return _load_raw(source, draft_size, max_pixels, name)
    try:
        return load_pillow(source, draft_size, max_pixels, name, dng_is_raw=True)
    except _IsDNG:
        return _load_raw(source, draft_size, max_pixels, name)


def _load_raw(source, draft_size, max_pixels, name):
    from pixquery.ingest.raw import load_raw

    if hasattr(source, "seek"):
        source.seek(0)
    return load_raw(source, draft_size, max_pixels, name)


def _starts_like_raw(source) -> bool:
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                prefix = f.read(16)
        elif hasattr(source, "seek") and hasattr(source, "tell"):
            pos = source.tell()
            prefix = source.read(16)
            source.seek(pos)
        else:
            return False
    except (OSError, ValueError):
        return False  # the decoder that follows says what is wrong with the file
    return formats.sniff_raw(prefix)


class _IsDNG(Exception):
    """Pillow opened a TIFF that is a DNG: LibRaw must decode it."""


def load_pillow(
    source, draft_size: int | None, max_pixels: int, name, rotate: bool = True, dng_is_raw: bool = False
) -> tuple[Image.Image, int, int]:
    """A picture Pillow (or a registered plugin: pillow-heif) reads: `_load` without RAW.
    rotate=False leaves the pixels as stored (a RAW preview, turned by its camera's own flag).
    dng_is_raw: raise _IsDNG for a TIFF that is a DNG (checked before anything is decoded)."""
    try:
        # PIL's own guard raises inside Image.open with no size in the message; ours below names
        # the size, before anything is decoded (header parsing allocates nothing).
        with open_header(source) as img:
            if dng_is_raw and img.format == "TIFF" and formats.DNG_VERSION_TAG in getattr(img, "tag_v2", {}):
                raise _IsDNG()
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage(
                    name, f"image is {w}x{h} pixels, above the {max_pixels:,}-pixel limit (decompression bomb?)"
                )
            if rotate and img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            if draft_size and img.format in ("JPEG", "HEIF"):
                # JPEG can decode at 1/2, 1/4 or 1/8 scale for free; draft picks the smallest scale
                # that keeps both sides >= draft_size, so the crop still has full resolution.
                # A HEIC's draft (pillow-heif >= 1.8) is its smallest embedded thumbnail (a phone's
                # is 320x240 or larger) with both sides >= draft_size, when it is a scaled copy.
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            if rotate:
                img = ImageOps.exif_transpose(img)
            return _to_rgb(img), w, h
    except (BadImage, _IsDNG):
        raise
    except PluginMissing as e:
        raise BadImage(name, str(e)) from None
    except FileNotFoundError:
        raise BadImage(name, "file not found") from None
    except PermissionError:
        raise BadImage(name, "permission denied") from None
    except IsADirectoryError:
        raise BadImage(name, "is a directory") from None
    except UnidentifiedImageError:
        empty = isinstance(source, (str, Path)) and Path(source).exists() and Path(source).stat().st_size == 0
        raise BadImage(name, "empty file (0 bytes)" if empty else "not an image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, MemoryError) as e:
        raise BadImage(name, f"cannot decode: {e}") from None


def resize_crop(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """open_clip's geometry: returns (size, size, 3) uint8."""
    size = cfg.size
    resample = _RESAMPLE[cfg.interpolation]
    w, h = img.size
    if cfg.resize_mode == "squash":
        return np.asarray(img.resize((size, size), resample))
    if cfg.resize_mode == "longest":
        scale = size / max(w, h)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((new_w, new_h), resample)
        canvas = Image.new("RGB", (size, size), (cfg.fill_color,) * 3)
        canvas.paste(img, ((size - new_w) // 2, (size - new_h) // 2))
        return np.asarray(canvas)
    # "shortest" (OpenAI CLIP): torchvision Resize(int) then CenterCrop, same rounding.
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))


def normalize(batch: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float32 normalised with the model's mean/std."""
    x = np.asarray(batch, dtype=np.float32)
    x *= 1.0 / 255.0
    x -= np.asarray(cfg.mean, dtype=np.float32)
    x /= np.asarray(cfg.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """One PIL image -> (3, H, W) float32, exactly as open_clip's eval transform."""
    return normalize(resize_crop(_to_rgb(img), cfg)[None], cfg)[0]


def load(
    source, draft_size: int | None = None, name=None, max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image, int, int]:
    """Decode a picture at `draft_size` or more (short side; None: in full), EXIF-rotated, RGB,
    and the photo's own size (width, height, EXIF rotation applied). Raises BadImage."""
    return _load(source, draft_size, max_pixels, name)


def decode_file(source, cfg: PreprocessConfig, draft: bool = True, name=None) -> Decoded:
    """The worker's job for one file (a path or a file object). Raises BadImage."""
    img, w, h = _load(source, cfg.size if draft else None, MAX_PIXELS, name)
    return Decoded(pixels=resize_crop(img, cfg), width=w, height=h)
