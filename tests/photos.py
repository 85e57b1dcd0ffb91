"""Makes real image files for tests: ordinary photos and every kind of awkward input."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def photo(size=(320, 240), seed=0, mode="RGB") -> Image.Image:
    """A smooth random 'photo' (gradients + blobs), so JPEG behaves as on real pictures."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    chans = []
    for c in range(3):
        a, b, f = rng.uniform(0, 1, 3)
        chans.append(np.sin(x * 6 * f + a * 6) * np.cos(y * 5 * b + c) * 0.5 + 0.5)
    arr = (np.stack(chans, -1) * 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


def make_photos(folder: Path, n: int, size=(320, 240), start_seed=0, ext=".jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"photo_{start_seed + i:04d}{ext}"
        photo(size, seed=start_seed + i).save(p)
        out.append(p)
    return out


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A landscape-stored JPEG whose EXIF says 'rotate 90' (as phones write them)."""
    img = photo((400, 200), seed=99)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes())
    return path


def awkward_files(folder: Path) -> dict[str, Path]:
    """Each case of the foundation issue: name -> path. 'good' cases must index, 'bad' must fail."""
    folder.mkdir(parents=True, exist_ok=True)
    f = {}
    # bad ones
    f["zero_byte"] = folder / "zero.jpg"
    f["zero_byte"].write_bytes(b"")
    buf = io.BytesIO()
    photo((640, 480), seed=1).save(buf, "JPEG")
    f["truncated"] = folder / "truncated.jpg"
    f["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    corrupt = bytearray(buf.getvalue())
    corrupt[200:4000] = os.urandom(3800)
    f["corrupt"] = folder / "corrupt.jpg"
    f["corrupt"].write_bytes(bytes(corrupt[:2000]) + b"\x00" * 10)
    f["not_an_image"] = folder / "notes.png"
    f["not_an_image"].write_text("this is a text file with an image extension\n")
    f["bomb"] = folder / "bomb.png"
    f["bomb"].write_bytes(_png_header_bomb(60000, 60000))
    # good ones
    f["cmyk"] = folder / "cmyk.jpg"
    photo(seed=2).convert("CMYK").save(f["cmyk"])
    f["sixteen_bit"] = folder / "sixteen.png"
    arr16 = (np.linspace(0, 65535, 240 * 320).reshape(240, 320)).astype(np.uint16)
    Image.fromarray(arr16).save(f["sixteen_bit"])
    f["palette_alpha"] = folder / "palette_alpha.png"
    pal = photo(seed=3).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    pal.info["transparency"] = 0
    pal.save(f["palette_alpha"], transparency=0)
    f["rgba"] = folder / "rgba.png"
    photo(seed=4).convert("RGBA").save(f["rgba"])
    f["animated_gif"] = folder / "animated.gif"
    frames = [photo((160, 120), seed=s).convert("P") for s in (5, 6, 7)]
    frames[0].save(f["animated_gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    f["exif_rotated"] = exif_rotated_jpeg(folder / "rotated.jpg")
    sub = folder / "ünïcödé folder with spaces"
    sub.mkdir(exist_ok=True)
    f["unicode_spaces"] = sub / "フォト 1.jpg"
    photo(seed=8).save(f["unicode_spaces"])
    f["grey"] = folder / "grey.tif"
    photo(seed=9).convert("L").save(f["grey"])
    f["webp"] = folder / "image.webp"
    photo(seed=10).save(f["webp"])
    return f


BAD = ("zero_byte", "truncated", "corrupt", "not_an_image", "bomb")


def _png_header_bomb(w: int, h: int) -> bytes:
    """A tiny PNG that claims w x h pixels: its header alone must get it refused."""
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )
