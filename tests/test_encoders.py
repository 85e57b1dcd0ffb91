"""Encoders on real (tiny, random-weight) models of the real architectures: no mocks.

Tests that need torch/open_clip are marked `torch` and skip on a runtime without the [torch] extra;
the tiny models are written and loaded with the default runtime only (see conftest_models.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest_models import tiny_arch, tiny_rn50, tiny_vit  # noqa: F401  (fixtures)
from pixquery.encoders import DEFAULT_MODEL, Encoder, known_models, load_encoder
from pixquery.errors import ModelNotAvailable, PixqueryError

SENTENCES = [
    "a photo of a dog",
    "",
    "   ",
    "A Photo Of A DOG!!!",
    "dog's toys, cat’s bed; “quoted” text",
    "what's up? I'll go. We've been. They're here. I'm OK. He'd say",
    "café crème brûlée naïve, Straße in München",
    "東京タワーの夜景",
    "🐶🐱 emoji 🚀 party 🎉",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ１２３",
    "ﬁsh ﬂower ĳs",
    "Tom &amp; Jerry &lt;3 &amp;amp;",
    "tab\tnew\nline  multiple   spaces",
    "numbers 1234567 3.14 1,000,000",
    "İstanbul ΣΊΣΥΦΟΣ Ὀδυσσεύς Привет мир مرحبا नमस्ते",
    "e\u0301 combining accent, zero\u200bwidth, control\x07char",
    "C:\\path\\to\\file.jpg #tag @user http://example.com/a?b=c",
    "!!!???...--- ¡¿ « » — –",
    " ".join(["word"] * 100),  # beyond 77 tokens: truncated, end token kept
    " ".join(f"token{i}" for i in range(200)),
    "x" * 500,
]


def _images(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Preprocessed-looking batches: normalised gradients plus noise (different per image)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for i in range(n):
        img = np.stack([np.sin(x * (i + 1) * 3), np.cos(y * (i + 2)), x * y * i], 0)
        out.append(img * 1.5 + rng.normal(0, 0.5, img.shape))
    return np.asarray(out, dtype=np.float32)


def _copy(model_dir: Path, dest: Path) -> Path:
    shutil.copytree(model_dir, dest, ignore=shutil.ignore_patterns("*.int8.*", "*.opt.*", "*.safetensors"))
    return dest


# -- tokenizer -------------------------------------------------------------------------------------
@pytest.mark.torch
def test_token_ids_match_open_clip(tiny_vit, monkeypatch):
    import open_clip

    ref = open_clip.get_tokenizer("ViT-B-32")(SENTENCES).numpy()
    enc = load_encoder(tiny_vit)
    ours = enc.tokenize(SENTENCES)
    assert ours.shape == ref.shape == (len(SENTENCES), 77)
    for sentence, a, b in zip(SENTENCES, ours, ref):
        assert a.tolist() == b.tolist(), sentence
    assert ref[-1, -1] == 49407  # the truncation case really was exercised
    # Without ftfy installed, the light cleaning gives the same ids on all of these.
    import pixquery.encoders.tokenizer as tokenizer

    monkeypatch.setattr(tokenizer, "_FTFY", [None])
    assert (enc.tokenize(SENTENCES) == ref).all()


# -- ONNX vs torch -----------------------------------------------------------------------------------
@pytest.mark.torch
def test_onnx_matches_open_clip_torch(tiny_arch):
    """The tiny models' graphs are written with numpy and onnx (pixquery.encoders.random_onnx); their
    weights, loaded into open_clip's own model of the same config, give the same embeddings: the
    graphs are open_clip's architectures."""
    onnx_enc = load_encoder(tiny_arch)
    torch_enc = load_encoder(f"open_clip:local-dir:{tiny_arch}")
    assert isinstance(onnx_enc, Encoder) and isinstance(torch_enc, Encoder)
    assert onnx_enc.dim == torch_enc.dim and onnx_enc.preprocess_cfg == torch_enc.preprocess_cfg

    images = _images(5)
    a, b = onnx_enc.encode_images(images), torch_enc.encode_images(images)
    assert a.shape == (5, onnx_enc.dim) and a.dtype == np.float32
    print(f"\n{tiny_arch.name}: image max abs diff {np.abs(a - b).max():.2e}", end="")
    assert np.abs(a - b).max() < 1e-4
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)

    texts = SENTENCES[:6] + SENTENCES[-2:]
    a, b = onnx_enc.encode_texts(texts), torch_enc.encode_texts(texts)
    print(f", text {np.abs(a - b).max():.2e}", end="")
    assert np.abs(a - b).max() < 1e-4
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)


@pytest.mark.torch
def test_fixed_batch_export_is_looped(tiny_vit, tmp_path):
    """immich's exports fix the batch at 1: the encoder reads that from the session and loops."""
    from pixquery.encoders.export import export_open_clip

    cfg = json.loads((tiny_vit / "config.json").read_text())
    fixed = export_open_clip(
        "tiny", None, tmp_path / "fixed", tiny_vit / "open_clip_model.safetensors", model_cfg=cfg, dynamic_batch=False
    )
    one, dyn = load_encoder(fixed), load_encoder(tiny_vit)
    for tower, encode, batch in (("visual", "encode_images", _images(3)), ("textual", "encode_texts", SENTENCES[:3])):
        a, b = getattr(one, encode)(batch), getattr(dyn, encode)(batch)
        assert one._session(tower).get_inputs()[0].shape[0] == 1
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-5


# -- the torch-free writer (pixquery.encoders.random_onnx) ------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
# Other shapes than the tiny models': QuickGELU, another MLP ratio and depth, several bottlenecks per stage.
OTHER_CFGS = {
    "vit-quickgelu": {
        "embed_dim": 24,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 224,
            "patch_size": 16,
            "width": 48,
            "head_width": 16,
            "layers": 3,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
    },
    "rn-2121": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 224, "layers": [2, 1, 2, 1], "width": 16, "head_width": 128},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1, "mlp_ratio": 2.0},
    },
}


def test_tiny_models_are_written_without_torch_and_deterministically(tmp_path):
    """scripts/make_tiny_models.py where torch and open_clip cannot be imported: the immich layout with
    immich's input/output names, a dynamic batch axis and opset 17, byte-identical on a second run."""
    import onnx

    code = (
        "import runpy, sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None\n"
        "script = sys.argv[1]; sys.argv = [script, '--out', sys.argv[2]]\n"
        "runpy.run_path(script, run_name='__main__')\n"
    )
    for out in ("a", "b"):
        run = subprocess.run(
            [sys.executable, "-c", code, str(ROOT / "scripts" / "make_tiny_models.py"), str(tmp_path / out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    for name, embed in (("tiny-vit-b-32", 32), ("tiny-rn50", 48)):
        model = tmp_path / "a" / name
        for f in (
            "config.json",
            "visual/model.onnx",
            "visual/preprocess_cfg.json",
            "textual/model.onnx",
            "textual/tokenizer.json",
            "textual/tokenizer_config.json",
            "textual/special_tokens_map.json",
            "open_clip_model.safetensors",
            "open_clip_config.json",
        ):
            assert (model / f).is_file(), f
        for tower, inp, elem, shape in (
            ("visual", "image", onnx.TensorProto.FLOAT, ["batch", 3, 224, 224]),
            ("textual", "text", onnx.TensorProto.INT32, ["batch", 77]),
        ):
            m = onnx.load(str(model / tower / "model.onnx"))
            onnx.checker.check_model(m)
            assert [o.version for o in m.opset_import] == [17]
            (i,), (o,) = m.graph.input, m.graph.output
            assert i.name == inp and i.type.tensor_type.elem_type == elem
            assert [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] == shape
            assert o.name == "embedding" and [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] == [
                "batch",
                embed,
            ]
        enc = load_encoder(model)
        assert enc.encode_images(_images(3)).shape == (3, embed) and enc.encode_texts(["a dog", "a cat"]).shape == (
            2,
            embed,
        )


def test_tokenizer_gives_clips_ids_without_open_clip(tiny_vit):
    """The tokenizer.json made from the shipped vocabulary: ids as open_clip gives them (written down)."""
    ids = load_encoder(tiny_vit).tokenize(["a photo of a dog", "Hello, World!"])
    assert ids[0, :7].tolist() == [49406, 320, 1125, 539, 320, 1929, 49407] and not ids[0, 7:].any()
    assert ids[1, :6].tolist() == [49406, 3306, 267, 1002, 256, 49407] and not ids[1, 6:].any()


@pytest.mark.torch
def test_tokenizer_json_is_the_one_export_writes(tiny_vit):
    """The shipped vocabulary is open_clip's file, and the tokenizer.json built from it without
    open_clip is the one `pixquery export` builds from open_clip's copy."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from tokenizers import Tokenizer

    from pixquery.encoders import clip_bpe
    from pixquery.encoders.export import build_clip_tokenizer

    assert clip_bpe.BPE_VOCAB.read_bytes() == Path(default_bpe()).read_bytes()
    assert clip_bpe.bytes_to_unicode() == bytes_to_unicode()
    assert Tokenizer.from_file(str(tiny_vit / "textual" / "tokenizer.json")).to_str() == build_clip_tokenizer().to_str()


@pytest.mark.torch
@pytest.mark.parametrize("kind", sorted(OTHER_CFGS))
def test_random_onnx_matches_open_clip_for_other_shapes(kind, tmp_path):
    from pixquery.encoders.random_onnx import write_random_model

    model = write_random_model(OTHER_CFGS[kind], tmp_path / kind, seed=1)
    onnx_enc, torch_enc = load_encoder(model), load_encoder(f"open_clip:local-dir:{model}")
    images, texts = _images(3), SENTENCES[:4]
    img = np.abs(onnx_enc.encode_images(images) - torch_enc.encode_images(images)).max()
    txt = np.abs(onnx_enc.encode_texts(texts) - torch_enc.encode_texts(texts)).max()
    print(f"\n{kind}: image max abs diff {img:.2e}, text {txt:.2e}", end="")
    assert img < 1e-4 and txt < 1e-4


# -- int8 -----------------------------------------------------------------------------------------
def test_int8_copy_is_made_once_and_agrees(tiny_vit, tmp_path):
    pytest.importorskip("onnx")
    model = _copy(tiny_vit, tmp_path / "m")
    fp32, int8 = load_encoder(model), load_encoder(model, precision="int8")
    assert int8.fingerprint != fp32.fingerprint  # int8 embeddings never mix with fp32 ones
    images, texts = _images(4), SENTENCES[:5]
    cos_img = (fp32.encode_images(images) * int8.encode_images(images)).sum(1)
    cos_txt = (fp32.encode_texts(texts) * int8.encode_texts(texts)).sum(1)
    print(f"\nint8 vs fp32 cosine: images min {cos_img.min():.5f}, texts min {cos_txt.min():.5f}", end="")
    assert cos_img.min() > 0.99 and cos_txt.min() > 0.99
    copies = sorted(model.glob("*/model.int8.*.onnx"))
    assert [p.parent.name for p in copies] == ["textual", "visual"]
    mtimes = [p.stat().st_mtime_ns for p in copies]
    again = load_encoder(model, precision="int8")
    again.encode_texts(["another query"])
    assert [p.stat().st_mtime_ns for p in copies] == mtimes  # reused, not re-quantised


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores read-only folders")
def test_int8_copy_of_read_only_model_goes_to_cache(tiny_vit, tmp_path):
    pytest.importorskip("onnx")
    model = _copy(tiny_vit, tmp_path / "ro")
    for d in (model / "textual", model / "visual"):
        d.chmod(0o555)
    try:
        enc = load_encoder(model, precision="int8", cache_dir=tmp_path / "cache")
        enc.encode_texts(["a dog"])
        assert list((tmp_path / "cache").rglob("*.int8.onnx"))
    finally:
        for d in (model / "textual", model / "visual"):
            d.chmod(0o755)


# -- loading and errors ---------------------------------------------------------------------------
def test_towers_load_lazily_and_queries_are_cached(tiny_vit):
    enc = load_encoder(tiny_vit)
    assert enc._sessions == {}
    first = enc.encode_texts(["a red car", "a red car", "a boat"])
    assert list(enc._sessions) == ["textual"]  # a text search never loads the image tower
    assert np.array_equal(first[0], first[1])
    assert set(enc._text_cache) == {"a red car", "a boat"}
    assert np.array_equal(enc.encode_texts(["a boat"])[0], first[2])
    assert enc.encode_images(np.zeros((0, 3, 224, 224), np.float32)).shape == (0, enc.dim)


def test_fingerprint_tells_weights_apart(tiny_vit, tiny_rn50, tmp_path):
    a, b = load_encoder(tiny_vit), load_encoder(tiny_rn50)
    assert a.fingerprint != b.fingerprint
    assert load_encoder(_copy(tiny_vit, tmp_path / "copy")).fingerprint == a.fingerprint


def test_missing_file_is_named(tiny_vit, tmp_path):
    model = _copy(tiny_vit, tmp_path / "broken")
    (model / "textual" / "tokenizer.json").unlink()
    with pytest.raises(PixqueryError, match="missing textual/tokenizer.json"):
        load_encoder(model)


def test_uncached_hub_model_offline_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable) as err:
        load_encoder("ViT-B/32", cache_dir=tmp_path / "hf")
    msg = str(err.value)
    for part in ("'ViT-B-32'", "immich-app/ViT-B-32__openai", str(tmp_path / "hf"), "--model", "pixquery export"):
        assert part in msg


def test_cached_hub_model_loads_offline(tiny_vit, tmp_path, monkeypatch):
    """A snapshot in the HF cache layout is used without any network access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hf" / "models--immich-app--RN50__openai"
    commit = "0123456789abcdef0123456789abcdef01234567"
    _copy(tiny_vit, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    enc = load_encoder("rn50", cache_dir=tmp_path / "hf")
    assert enc.name == "RN50__openai"
    assert enc.encode_texts(["a dog"]).shape == (1, 32)


def test_names_and_unknown_names():
    names = [m["name"] for m in known_models()]
    assert names[:5] == ["RN50", "RN50x4", "ViT-B-32", "ViT-B-16", "ViT-L-14"]  # the study's, first
    assert all(m["repo"] == f"immich-app/{m['name']}__openai" for m in known_models()[:5])
    assert DEFAULT_MODEL in names and all(m["dim"] > 0 for m in known_models())
    with pytest.raises(PixqueryError, match="unknown model 'ViT-Z-99'.*ViT-B-32"):
        load_encoder("ViT-Z-99")
    with pytest.raises(PixqueryError, match="model folder not found"):
        load_encoder("./no/such/dir")


def test_runtime_without_torch(tiny_vit):
    """The default runtime has no torch: ONNX models work; open_clip names say what to install."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['open_clip'] = None\n"
        "from pixquery.encoders import load_encoder\n"
        "from pixquery.errors import PixqueryError\n"
        f"print(load_encoder({str(tiny_vit)!r}).encode_texts(['a dog']).shape)\n"
        "try:\n    load_encoder('open_clip:ViT-B-32/openai')\n"
        "except PixqueryError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(1, 32)" in out.stdout and "pip install 'pixquery[torch]'" in out.stdout
