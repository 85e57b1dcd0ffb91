"""pixquery's preprocessing is open_clip's eval transform, to float precision (no mocks: real PIL
images of several sizes, aspect ratios, modes and formats, written to disk and read back).
The comparisons need open_clip (marked `torch`: skipped without the [torch] extra)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest_models import tiny_vit  # noqa: F401  (fixture)
from pixquery.encoders.base import PreprocessConfig
from pixquery.ingest.decode import decode_file, normalize, preprocess

SIZES = [(640, 480), (480, 640), (224, 224), (225, 224), (1000, 333), (333, 1000), (97, 131), (1024, 768)]


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """Gradients + noise + a hard edge: resampling differences would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255.0 / max(w - 1, 1), y * 255.0 / max(h - 1, 1), (x + y) % 256.0], -1)
    base[h // 3 : h // 2, w // 4 : w // 2] = (250, 20, 120)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    files = []
    for i, (w, h) in enumerate(SIZES):
        img = _photo(w, h, i)
        for mode, fmt in (("RGB", "JPEG"), ("RGB", "PNG"), ("L", "JPEG"), ("L", "PNG")):
            path = folder / f"{w}x{h}-{mode}.{fmt.lower()}"
            img.convert(mode).save(path, fmt, quality=90)
            files.append(path)
    return files


def _reference(cfg: PreprocessConfig):
    import open_clip

    return open_clip.image_transform(
        cfg.size,
        is_train=False,
        mean=cfg.mean,
        std=cfg.std,
        resize_mode=cfg.resize_mode,
        interpolation=cfg.interpolation,
        fill_color=cfg.fill_color,
    )


@pytest.mark.torch
@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
def test_preprocess_matches_open_clip(photo_files, resize_mode):
    cfg = PreprocessConfig(resize_mode=resize_mode)
    ref = _reference(cfg)
    # Every file for the default (OpenAI) mode; the other modes on the colour JPEGs only.
    for path in photo_files if resize_mode == "shortest" else [p for p in photo_files if "RGB.jpeg" in p.name]:
        with Image.open(path) as img:
            img.load()
            ours, theirs = preprocess(img, cfg), ref(img).numpy()
        assert ours.shape == theirs.shape == (3, 224, 224)
        assert np.abs(ours - theirs).max() < 1e-5, path.name


@pytest.mark.torch
def test_decode_file_without_draft_matches_open_clip(photo_files):
    """The ingest path (uint8 pixels from a worker, normalised in a batch) gives the same tensor."""
    cfg = PreprocessConfig()
    ref = _reference(cfg)
    for path in photo_files:
        ours = normalize(decode_file(path, cfg, draft=False).pixels[None], cfg)[0]
        with Image.open(path) as img:
            theirs = ref(img).numpy()
        assert np.abs(ours - theirs).max() < 1e-5, path.name


def test_model_folder_preprocess_cfg_is_the_default(tiny_vit):
    """What the model folder says reaches PreprocessConfig (OpenAI mean/std, bicubic, 224)."""
    from pixquery.encoders import load_encoder

    assert load_encoder(tiny_vit).preprocess_cfg == PreprocessConfig()


@pytest.mark.torch
def test_model_folder_preprocess_cfg_is_open_clips(tiny_vit):
    """The torch-free writer's preprocess_cfg.json is what open_clip gives for the same model."""
    import json

    import open_clip

    from pixquery.encoders import load_encoder
    from pixquery.encoders.export import preprocess_cfg_of

    enc = load_encoder(tiny_vit)
    model = open_clip.create_model(f"local-dir:{tiny_vit}")
    written = json.loads((tiny_vit / "visual" / "preprocess_cfg.json").read_text())
    assert written == json.loads(json.dumps(preprocess_cfg_of(model)))  # as `pixquery export` writes it
    expected = open_clip.get_model_preprocess_cfg(model)
    assert list(enc.preprocess_cfg.mean) == pytest.approx(list(expected["mean"]))
