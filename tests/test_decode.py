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


@pytest.mark.parametrize("case", ["cmyk", "sixteen_bit", "palette_alpha", "rgba", "animated_gif", "exif_rotated", "unicode_spaces", "grey", "webp"])
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
