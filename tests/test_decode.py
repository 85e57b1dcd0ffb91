"""Decoding real awkward files: each bad one fails with its reason, each odd-but-valid one decodes."""

import numpy as np
import pytest
from PIL import Image

from photos import BAD, awkward_files, exif_rotated_jpeg, photo
from pixquery.encoders.base import PreprocessConfig
from pixquery.errors import BadImage
from pixquery.ingest.decode import decode_file, load_image, normalize, preprocess

CFG = PreprocessConfig()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return awkward_files(tmp_path_factory.mktemp("awkward"))


@pytest.mark.parametrize("case", BAD)
def test_bad_files_raise_badimage_naming_file(files, case):
    with pytest.raises(BadImage) as e:
        decode_file(files[case], CFG)
    assert str(files[case]) in str(e.value)
    assert e.value.reason


def test_reasons_are_specific(files):
    reason = lambda c: pytest.raises(BadImage, decode_file, files[c], CFG).value.reason  # noqa: E731
    assert "0 bytes" in reason("zero_byte")
    assert "60000x60000" in reason("bomb")
    assert "not an image" in reason("not_an_image")
    assert "truncated" in reason("truncated")


@pytest.mark.parametrize(
    "case",
    ["cmyk", "sixteen_bit", "palette_alpha", "rgba", "animated_gif", "exif_rotated", "unicode_spaces", "grey", "webp"],
)
def test_valid_odd_files_decode(files, case):
    d = decode_file(files[case], CFG)
    assert d.pixels.shape == (224, 224, 3) and d.pixels.dtype == np.uint8
    assert d.pixels.std() > 1  # real content, not a blank image


def test_sixteen_bit_is_scaled_not_clipped(files):
    img = load_image(files["sixteen_bit"])
    arr = np.asarray(img)
    assert arr.min() < 10 and arr.max() > 245 and 0.3 < (arr > 128).mean() < 0.7


def test_exif_rotation_applied_before_embedding(tmp_path):
    p = exif_rotated_jpeg(tmp_path / "r.jpg", orientation=6)
    assert Image.open(p).size == (400, 200)  # stored landscape
    img = load_image(p)
    assert img.size == (200, 400)  # shown portrait
    d = decode_file(p, CFG)
    assert (d.width, d.height) == (200, 400)
    upright = photo((400, 200), seed=99).transpose(Image.Transpose.ROTATE_270)
    want = preprocess(upright, CFG)
    got = normalize(decode_file(p, CFG, draft=False).pixels[None], CFG)[0]
    assert np.abs(got - want).mean() < 0.1  # same picture (JPEG noise aside), not a rotated one


def test_draft_mode_close_to_full_decode(tmp_path):
    p = tmp_path / "big.jpg"
    photo((2400, 1800), seed=5).save(p, quality=92)
    full = decode_file(p, CFG, draft=False).pixels.astype(float)
    fast = decode_file(p, CFG, draft=True).pixels.astype(float)
    assert np.abs(full - fast).mean() < 3.0


def test_gif_uses_first_frame(files):
    img = load_image(files["animated_gif"])
    first = photo((160, 120), seed=5).convert("P").convert("RGB")
    assert np.abs(np.asarray(img, float) - np.asarray(first, float)).mean() < 12


# ------------------------------------------------------------------ the bomb guard and threads


def test_bomb_guard_is_never_switched_off_while_threads_decode(tmp_path):
    """PIL's guard is process-wide (Image.MAX_IMAGE_PIXELS). Reading a header's size by switching
    it off and back on races between threads: one can see it off, or restore None for good."""
    import io
    import sys
    import threading
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from photos import _png_header_bomb

    limit = Image.MAX_IMAGE_PIXELS
    normal = []
    for i in range(4):
        normal.append(tmp_path / f"p{i}.jpg")
        photo(seed=i).save(normal[-1])
    bomb = tmp_path / "bomb.png"  # 3.6 G pixels: above PIL's limit and ours
    bomb.write_bytes(_png_header_bomb(60000, 60000))
    big = _png_header_bomb(10000, 10000)  # 100 M pixels: above PIL's default, under ours
    stop = threading.Event()
    seen = set()

    def watch():
        while not stop.is_set():
            value = Image.MAX_IMAGE_PIXELS
            if value != limit:
                seen.add(value)

    def work(i):
        reasons = []
        for j in range(25):
            case = (i + j) % 4
            if case < 2:
                assert load_image(normal[(i + j) % len(normal)], draft_size=224).size == (320, 240)
                continue
            with pytest.raises(BadImage) as e:
                if case == 2:
                    load_image(bomb)
                else:  # an upload below the server's own (lower) limit
                    load_image(io.BytesIO(big), max_pixels=80_000_000, name="upload")
            reasons.append(e.value.reason)
        return reasons

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: a short window is seen
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with warnings.catch_warnings(record=True) as caught, ThreadPoolExecutor(8) as pool:
            warnings.simplefilter("always")
            reasons = [r for rs in pool.map(work, range(8)) for r in rs]
    finally:
        stop.set()
        watcher.join()
        sys.setswitchinterval(switch)
    assert seen == set(), f"Image.MAX_IMAGE_PIXELS was seen as {seen} while threads decoded"
    assert limit == Image.MAX_IMAGE_PIXELS
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    # every bomb was refused by our guard, with its size in the reason
    assert len(reasons) == 8 * 25 // 2
    assert all("decompression bomb" in r and ("60000x60000" in r or "10000x10000" in r) for r in reasons)
    # and PIL's own guard is still on for everyone else
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bomb)


def test_nothing_in_src_assigns_pil_max_image_pixels():
    """The bomb guard is process state: no code of ours may switch it (not even 'for a moment')."""
    import ast
    from pathlib import Path

    import pixquery

    offenders = []
    for path in Path(pixquery.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setattr"
                and any(isinstance(a, ast.Constant) and a.value == "MAX_IMAGE_PIXELS" for a in node.args)
            ):
                offenders.append(f"{path}:{node.lineno}")
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, (ast.Attribute, ast.Name)) and "MAX_IMAGE_PIXELS" in (
                        getattr(sub, "attr", None),
                        getattr(sub, "id", None),
                    ):
                        offenders.append(f"{path}:{node.lineno}")
    assert offenders == [], "assigns Image.MAX_IMAGE_PIXELS: " + ", ".join(offenders)


def test_open_header_reads_the_size_of_a_bomb_without_decoding_it(tmp_path):
    import io

    from photos import _png_header_bomb
    from pixquery.ingest.decode import open_header

    with open_header(io.BytesIO(_png_header_bomb(60000, 60000))) as img:
        assert img.size == (60000, 60000) and img.format == "PNG"
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(OSError), open_header(tmp_path / "x.jpg"):  # PIL's UnidentifiedImageError
        pass
