"""Model families beyond OpenAI CLIP: SigLIP, SigLIP 2, the multilingual XLM-RoBERTa and NLLB towers,
open_clip's DataComp/LAION ViTs and MobileCLIP2, each as a tiny random-weight model of open_clip's own
architecture (tests/tiny_families.py) exported by pixquery's exporter.

For every family, pixquery's ONNX path gives open_clip's embeddings (max abs diff <= 1e-4), open_clip's
token ids on a multilingual corpus, and open_clip's preprocessing (pixel diff 0); `pixquery index
--model FOLDER` works with each. Registry, licence and CLI tests need no torch.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from clirun import pixquery
from photos import make_photos
from pixquery.encoders import known_models, load_encoder
from pixquery.encoders.registry import _MODELS, DEFAULT_MODEL, accept_licence, model_spec
from pixquery.errors import ModelNotAvailable, PixqueryError
from tiny_families import CORPUS, FAMILIES, MULTILINGUAL, QUERIES, family_model


@pytest.fixture(autouse=True)
def _own_licence_file(tmp_path, monkeypatch):
    """Accepted licences go to a per-test folder, never the user's."""
    monkeypatch.setenv("PIXQUERY_CONFIG_DIR", str(tmp_path / "config"))


def _images(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(size)
    return rng.normal(0, 1, (n, 3, size, size)).astype(np.float32)


# -- equivalence with open_clip, per family ------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("kind", FAMILIES)
def test_family_matches_open_clip(kind):
    folder = family_model(kind)
    ours, ref = load_encoder(folder), load_encoder(f"open_clip:local-dir:{folder}")
    assert ours.dim == ref.dim and ours.preprocess_cfg == ref.preprocess_cfg

    # tokens: every string of the multilingual corpus (emoji, CJK, Arabic, accents, 200+ characters)
    a, b = ours.tokenize(CORPUS), ref.tokenizer(CORPUS).numpy()
    assert a.shape == b.shape
    for text, x, y in zip(CORPUS, a, b):
        assert x.tolist() == y.tolist(), (kind, text)
    assert len({tuple(r) for r in a}) > len(CORPUS) - 3  # distinct strings, distinct ids (not all <unk>)

    images = _images(3, ours.preprocess_cfg.size)
    x, y = ours.encode_images(images), ref.encode_images(images)
    print(f"\n{kind}: image max abs diff {np.abs(x - y).max():.2e}", end="")
    assert x.shape == (3, ours.dim) and np.abs(x - y).max() <= 1e-4
    x, y = ours.encode_texts(CORPUS), ref.encode_texts(CORPUS)
    print(f", text {np.abs(x - y).max():.2e}", end="")
    assert np.abs(x - y).max() <= 1e-4
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["siglip", "siglip2", "nllb"])
def test_sigmoid_models_score_with_their_logit_scale_and_bias(kind):
    """SigLIP-trained models: the probability pixquery reports is the model's own
    sigmoid(scale * cos + bias), as open_clip's model computes its logits."""
    import torch

    folder = family_model(kind)
    ours, ref = load_encoder(folder), load_encoder(f"open_clip:local-dir:{folder}")
    model = ref.model
    scale, bias = model.logit_scale.detach().exp(), model.logit_bias.detach()
    assert ours.logit_scale == pytest.approx(float(scale), rel=1e-6)
    assert ours.logit_bias == pytest.approx(float(bias), rel=1e-6)
    img, txt = ours.encode_images(_images(2, ours.preprocess_cfg.size)), ours.encode_texts(["a dog", "ein Hund"])
    cos = img @ txt.T
    expected = torch.sigmoid(torch.from_numpy(cos) * scale + bias).numpy()
    assert np.allclose(ours.match_probability(cos), expected, atol=1e-6)
    assert load_encoder(family_model("datacomp")).match_probability(cos) is None  # CLIP: no calibration


@pytest.mark.torch
@pytest.mark.parametrize("kind", FAMILIES)
def test_family_preprocessing_is_open_clips_pixel_for_pixel(kind, tmp_path):
    """Each family's resize (SigLIP squashes without a centre crop; MobileCLIP2 is bilinear at 256 px)
    gives open_clip's 8-bit pixels exactly, before normalisation; normalised within float error."""
    import open_clip
    from torchvision import transforms as T

    from pixquery.ingest.decode import preprocess, resize_crop

    cfg = load_encoder(family_model(kind)).preprocess_cfg
    full = open_clip.image_transform(
        cfg.size,
        is_train=False,
        mean=cfg.mean,
        std=cfg.std,
        resize_mode=cfg.resize_mode,
        interpolation=cfg.interpolation,
    )
    geometry = T.Compose([t for t in full.transforms if not isinstance(t, (T.ToTensor, T.Normalize))])
    rng = np.random.default_rng(1)
    for w, h in ((640, 480), (333, 1000), (97, 131), (cfg.size, cfg.size)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ours, theirs = resize_crop(img, cfg), np.asarray(geometry(img).convert("RGB"))
        assert ours.shape == theirs.shape == (cfg.size, cfg.size, 3)
        assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) == 0, (kind, w, h)
        assert np.abs(preprocess(img, cfg) - full(img).numpy()).max() < 1e-5


@pytest.mark.torch
def test_mobileclip2_is_exported_reparameterised():
    """The ONNX image tower has the folded branches: fewer convolutions than the trained form."""
    import onnx
    import torch

    from pixquery.encoders.export import build_open_clip, reparameterized

    folder = family_model("mobileclip2")
    cfg = json.loads((folder / "config.json").read_text())
    trained = build_open_clip(cfg).eval()
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in trained.visual.modules())
    folded = sum(isinstance(m, torch.nn.Conv2d) for m in reparameterized(trained).visual.modules())
    graph = onnx.load(str(folder / "visual" / "model.onnx"), load_external_data=False)
    in_graph = sum(n.op_type == "Conv" for n in graph.graph.node)
    assert folded < convs and in_graph <= folded


# -- queries in other languages -------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("kind", MULTILINGUAL)
def test_german_chinese_arabic_queries(kind):
    """Through the multilingual tokenizer and text tower: open_clip's ids and embeddings (random
    weights: equivalence, not accuracy), and each language's own tokens (not <unk>)."""
    folder = family_model(kind)
    ours, ref = load_encoder(folder), load_encoder(f"open_clip:local-dir:{folder}")
    texts = list(QUERIES.values())
    ids = ours.tokenize(texts)
    assert (ids == ref.tokenizer(texts).numpy()).all()
    from tokenizers import Tokenizer

    unk = Tokenizer.from_file(str(folder / "textual" / "tokenizer.json")).token_to_id("<unk>")
    for lang, row in zip(QUERIES, ids):
        content = [i for i in row.tolist() if i > 4]  # past the special tokens
        assert content and sum(i != unk for i in content) >= len(content) // 2, lang
    x, y = ours.encode_texts(texts), ref.encode_texts(texts)
    assert np.abs(x - y).max() <= 1e-4
    assert len({tuple(np.round(v, 5)) for v in x}) == 3


@pytest.mark.torch
def test_search_reports_and_thresholds_on_the_match_probability(tmp_path):
    """A SigLIP library's results carry the model's match probability, and --threshold p=P keeps
    exactly the results with a probability of at least P (the same meaning for every query)."""
    from pixquery.api import Library

    photos = tmp_path / "photos"
    make_photos(photos, 6)
    folder = family_model("siglip2")
    with Library.open(tmp_path / "lib", model=str(folder)) as lib:
        lib.index([photos])
        results = lib.search("ein Hund", k=6)
        assert len(results) == 6
        for r in results:
            assert r.probability == pytest.approx(float(lib.encoder.match_probability(r.score)), rel=1e-5)
        probs = sorted(r.probability for r in results)
        cut = (probs[2] + probs[3]) / 2
        kept = lib.search("ein Hund", k=6, threshold=f"p={cut}")
        assert sorted(r.probability for r in kept) == probs[3:]
    with Library.open(tmp_path / "clip", model=str(family_model("datacomp"))) as lib:
        lib.index([photos])
        assert all(r.probability is None for r in lib.search("a dog", k=2))
        with pytest.raises(PixqueryError, match="not sigmoid-trained"):
            lib.search("a dog", threshold="p=0.5")


# -- the CLI with each family from a local folder ---------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("kind", FAMILIES)
def test_index_and_search_with_each_family_from_a_local_folder(kind, tmp_path):
    folder = family_model(kind)
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    lib = tmp_path / "lib"
    r = pixquery("index", photos, "-L", lib, "--model", folder)
    assert r.returncode == 0, r.stdout + r.stderr
    query = QUERIES["de"] if kind in MULTILINGUAL else "a red car"
    r = pixquery("search", query, "-L", lib, "--json", "-k", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    hits = json.loads(r.stdout)
    results = hits["results"] if isinstance(hits, dict) else hits
    assert len(results) == 3
    sigmoid = kind in ("siglip", "siglip2", "nllb")  # SigLIP-trained: the model's match probability is reported
    assert all(("probability" in r) == sigmoid for r in results)
    info = json.loads(pixquery("info", "-L", lib, "--json").stdout)
    assert info["images"] == 3 and info["models"][0]["dim"] == load_encoder(folder).dim


@pytest.mark.torch
def test_a_new_model_adds_its_embeddings_beside_the_old_ones(tmp_path, tiny_model):
    """An existing library keeps its embeddings: `index --model NEW` adds NEW's beside them, and the
    old model still answers without re-embedding anything."""
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    lib = tmp_path / "lib"
    assert pixquery("index", photos, "-L", lib, "--model", tiny_model).returncode == 0
    new = family_model("siglip2")
    r = pixquery("index", photos, "-L", lib, "--model", new)
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads(pixquery("info", "-L", lib, "--json").stdout)
    assert sorted(m["dim"] for m in info["models"]) == sorted([load_encoder(tiny_model).dim, load_encoder(new).dim])
    r = pixquery("index", photos, "-L", lib, "--model", tiny_model)
    assert r.returncode == 0 and "indexed 0" in r.stdout + r.stderr, r.stdout + r.stderr
    r = pixquery("search", "a dog", "-L", lib, "--model", tiny_model, "--json", "-k", "2")
    assert r.returncode == 0, r.stderr


def test_an_existing_library_keeps_its_model(tmp_path, tiny_model):
    """A new default never changes an existing library's model: one that stored its model keeps it;
    one indexed before `index` always stored it (so with the default of its time, ViT-B-32) keeps
    ViT-B-32; only a new library gets the new default."""
    import sqlite3

    from pixquery.api import CATALOG_FILE, Library
    from pixquery.encoders.registry import LEGACY_DEFAULT_MODEL

    photos = tmp_path / "photos"
    make_photos(photos, 2)
    with Library.open(tmp_path / "lib", model=str(tiny_model)) as lib:
        lib.index([photos])
    with Library.open(tmp_path / "lib") as lib:  # no --model: the library's, not DEFAULT_MODEL
        assert lib.model_name == str(tiny_model)
    with sqlite3.connect(tmp_path / "lib" / CATALOG_FILE) as db:  # as an older pixquery left it
        db.execute("DELETE FROM setting WHERE key = 'model'")
    with Library.open(tmp_path / "lib") as lib:
        assert lib.model_name == LEGACY_DEFAULT_MODEL != DEFAULT_MODEL
    with Library.open(tmp_path / "new") as lib:
        assert lib.model_name == DEFAULT_MODEL


# -- registry, licences, `pixquery models` ---------------------------------------------------------------
def test_registry_rows_are_complete_and_the_default_is_permissive():
    rows = known_models()
    names = [m["name"] for m in rows]
    assert len(set(n.lower() for n in names)) == len(names)
    for family in ("openai", "open_clip", "siglip", "siglip2", "multilingual", "mobileclip2"):
        assert any(m["family"] == family for m in rows), family
    for m in rows:
        assert m["dim"] > 0 and m["image_size"] >= 224 and m["licence"] and m["arch"] and m["pretrained"]
        if m["imagenet_top1"] is not None or m["coco_t2i_r1"] is not None:
            assert m["accuracy_source"]
    default = model_spec(DEFAULT_MODEL)
    assert default.commercial and default.repo  # permissive, and downloadable without torch
    assert not _MODELS["MobileCLIP2-S0"].commercial and not _MODELS["nllb-clip-base-siglip"].commercial


@pytest.mark.torch
def test_registry_architectures_and_tags_are_open_clips():
    import open_clip

    for spec in _MODELS.values():
        assert spec.pretrained in open_clip.list_pretrained_tags_by_model(spec.arch), spec.name
        cfg = open_clip.get_model_config(spec.arch)
        assert cfg["embed_dim"] == spec.dim, spec.name
        size = cfg["vision_cfg"].get("image_size", 224)
        assert (size[0] if isinstance(size, (list, tuple)) else size) == spec.image_size, spec.name


def test_non_commercial_model_needs_its_licence_accepted_once(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        PixqueryError, match="MobileCLIP2-S0's weights are under Apple.*pixquery models --accept MobileCLIP2-S0"
    ):
        load_encoder("MobileCLIP2-S0")
    # a folder exported from those weights carries the same rule (random weights carry none)
    folder = tmp_path / "mobileclip2-folder"
    shutil.copytree(
        tiny_model, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.opt.*", "*.ctx.*", "*.int8.*")
    )
    config = json.loads((folder / "config.json").read_text())
    config.pop("random_weights")
    (folder / "config.json").write_text(json.dumps({**config, "pixquery_model": "MobileCLIP2-S0"}))
    with pytest.raises(PixqueryError, match="--accept MobileCLIP2-S0"):
        load_encoder(folder)
    accept_licence("mobileclip2-s0")
    assert load_encoder(folder).dim == config["embed_dim"]
    with pytest.raises(ModelNotAvailable, match="pixquery export MobileCLIP2-S0"):  # accepted: now only not exported
        load_encoder("MobileCLIP2-S0")


def test_models_command_lists_every_model_with_licence_speed_and_accuracy(tmp_path):
    env = {"PIXQUERY_CONFIG_DIR": str(tmp_path / "config")}
    r = pixquery("models", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    header = lines[0].split("\t")
    assert header[:9] == [
        "name",
        "dim",
        "image_px",
        "download_mb",
        "images_per_s",
        "text_ms",
        "imagenet_top1",
        "coco_t2i_r1",
        "licence",
    ]
    rows = {line.split("\t")[0].replace(" (default)", ""): line.split("\t") for line in lines[1:]}
    assert set(rows) == set(_MODELS)
    assert rows["ViT-B-32"][6] == "63.3" and "Apple" in rows["MobileCLIP2-S0"][8]
    assert "--accept" in rows["MobileCLIP2-S0"][8] and f"{DEFAULT_MODEL} (default)" in r.stdout
    speeds = json.loads(pixquery("models", "--json", env=env).stdout)
    assert all(m["images_per_s"] and m["text_ms"] and m["download_mb"] for m in speeds), "run bench/models.py"
    r = pixquery("models", "--accept", "MobileCLIP2-S0", env=env)
    assert r.returncode == 0 and "not for commercial use" in r.stdout
    assert "[accepted]" in pixquery("models", env=env).stdout
    r = pixquery("models", "--accept", "ViT-Z-99", env=env)
    assert r.returncode == 2 and "unknown model" in r.stderr and "Traceback" not in r.stderr


def test_a_model_immich_does_not_publish_says_how_to_export_it(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(ModelNotAvailable, match=r"pixquery export ViT-B-32-datacomp.*--model"):
        load_encoder("ViT-B-32-datacomp")


@pytest.mark.torch
def test_export_of_a_model_with_an_hf_tokenizer_offline_says_what_to_do(tmp_path):
    """The real tokenizer download path stays: offline it fails fast with the fix."""
    r = pixquery(
        "export",
        "ViT-B-16-SigLIP2",
        tmp_path / "out",
        "--random",
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf")},
        timeout=600,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "tokenizer" in r.stderr and "--tokenizer DIR" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
