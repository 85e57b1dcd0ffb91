"""The pre-optimised copy of the text tower (pixquery.encoders.onnx.optimized_copy): same
embeddings as a plain session, made once, and a corrupt or stale copy is made again, never used."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from pixquery.encoders import onnx as onnx_encoder
from pixquery.encoders.onnx import OnnxClipEncoder, optimized_copy_paths

QUERIES = [
    "a dog",
    "a photo of a red sports car parked near the beach at sunset, seen from above",
    "x",
    "ünïcödé & <b>html</b>",
    "a dog",
]


def _fresh_copy(model, dest):
    return shutil.copytree(model, dest, ignore=shutil.ignore_patterns("*.int8.*", "*.ctx.*", "*.opt.*", "*.none"))


def _opt_folder(enc):
    path = enc.session_paths["textual"]
    assert path.name == "model.onnx" and ".opt." in path.parent.name, path
    return path.parent


@pytest.fixture
def model(tiny_model, tmp_path):
    return _fresh_copy(tiny_model, tmp_path / "m")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("short_context", [True, False])
def test_same_embeddings_as_the_plain_session(model, precision, short_context):
    plain = OnnxClipEncoder(model, precision=precision, short_context=short_context, optimized_copy=False).encode_texts(
        QUERIES
    )
    for prepack in (True, False):
        enc = OnnxClipEncoder(model, precision=precision, short_context=short_context, prepack=prepack)
        out = enc.encode_texts(QUERIES)
        _opt_folder(enc)
        assert np.abs(out - plain).max() <= 1e-6, prepack
        if prepack:
            assert np.array_equal(out, plain)  # same kernels, same weights layout: bit for bit


def test_made_once_then_reused_and_loaded_unoptimised(model, monkeypatch):
    enc = OnnxClipEncoder(model)
    enc.encode_texts(["a dog"])
    folder = _opt_folder(enc)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["max_abs_diff"] <= 1e-6 and manifest["onnxruntime"] == ort.__version__
    assert (folder / "model.onnx.data").stat().st_size > 0.9 * sum(
        f.stat().st_size for f in (model / "textual").glob("model.ctx.*.onnx")
    )
    stamps = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    levels = []
    real = ort.InferenceSession

    def spy(path, opts=None, **kw):
        levels.append((str(path), opts.graph_optimization_level if opts else None))
        return real(path, opts, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    again = OnnxClipEncoder(model)
    again.encode_texts(["a cat"])
    assert levels == [
        (str(folder / "model.onnx"), ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    ]  # one session, no optimising
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == stamps


def _corrupt_data_start(folder):
    with open(folder / "model.onnx.data", "r+b") as f:
        f.write(b"\x7f" * 4096)


def _truncate_data(folder):
    with open(folder / "model.onnx.data", "r+b") as f:
        f.truncate(f.seek(0, 2) - 4096)


def _corrupt_data_middle(folder):
    size = (folder / "model.onnx.data").stat().st_size
    with open(folder / "model.onnx.data", "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(65536))


def _garbage_graph(folder):
    (folder / "model.onnx").write_bytes(b"not a model")


def _manifest_of_another_source(folder):
    m = json.loads((folder / "manifest.json").read_text())
    m["source"] = "0123456789abcdef-ort0.0.0"
    (folder / "manifest.json").write_text(json.dumps(m))


def _no_manifest(folder):
    (folder / "manifest.json").unlink()


def _half_written(folder):  # as left by a crash before the rename, under the final name
    (folder / "manifest.json").unlink()
    (folder / "model.onnx.data").write_bytes(b"")


@pytest.mark.parametrize(
    "damage",
    [
        _corrupt_data_start,
        _truncate_data,
        _corrupt_data_middle,
        _garbage_graph,
        _manifest_of_another_source,
        _no_manifest,
        _half_written,
    ],
)
def test_a_corrupt_or_stale_copy_is_made_again_never_used(model, damage, monkeypatch, caplog):
    expected = OnnxClipEncoder(model, optimized_copy=False).encode_texts(QUERIES)
    enc = OnnxClipEncoder(model)
    enc.encode_texts(["warm"])
    folder = _opt_folder(enc)
    good = {f.name: f.read_bytes() for f in folder.iterdir()}
    damage(folder)
    loaded = []
    real = ort.InferenceSession

    def spy(path, opts=None, **kw):
        if str(path) == str(folder / "model.onnx"):
            loaded.append(bytes((folder / "model.onnx.data").read_bytes()[:16]))  # what the session would read
        return real(path, opts, **kw)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    again = OnnxClipEncoder(model)
    out = again.encode_texts(QUERIES)
    assert np.abs(out - expected).max() <= 1e-6
    assert _opt_folder(again) == folder
    assert "corrupt or stale" in caplog.text
    # made again: the same bytes as the first time, and the damaged copy never reached a session
    assert {f.name: f.read_bytes() for f in folder.iterdir() if f.name != "manifest.json"} == {
        k: v for k, v in good.items() if k != "manifest.json"
    }
    assert loaded and all(x == good["model.onnx.data"][:16] for x in loaded)


def test_another_model_or_onnxruntime_gets_its_own_copy(model, monkeypatch):
    enc = OnnxClipEncoder(model, short_context=False)
    enc.encode_texts(["a dog"])
    first = _opt_folder(enc)
    assert first.name.endswith(f"-ort{ort.__version__}")
    monkeypatch.setattr(ort, "__version__", "9.99.0")
    enc2 = OnnxClipEncoder(model, short_context=False)
    enc2.encode_texts(["a dog"])
    assert _opt_folder(enc2) != first and _opt_folder(enc2).name.endswith("-ort9.99.0")
    monkeypatch.undo()
    # the model re-exported (other weights, same size): its fingerprint, so its copy, changes
    src = model / "textual" / "model.onnx"
    beside, _ = optimized_copy_paths(src)
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    init = max(m.graph.initializer, key=lambda t: np.prod(t.dims))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0.5, init.name))
    onnx.save(m, str(src))
    assert optimized_copy_paths(src)[0] != beside
    enc3 = OnnxClipEncoder(model, short_context=False)
    out3 = enc3.encode_texts(["a dog"])
    assert _opt_folder(enc3) == optimized_copy_paths(src)[0]
    plain3 = OnnxClipEncoder(model, short_context=False, optimized_copy=False).encode_texts(["a dog"])
    assert np.abs(out3 - plain3).max() <= 1e-6


def test_read_only_model_folder_uses_the_cache_folder(model, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    enc0 = OnnxClipEncoder(model)
    enc0.tokenize(["x"])
    os.chmod(model / "textual", 0o555)
    try:
        enc = OnnxClipEncoder(model, short_context=False, cache_dir=tmp_path / "cache")
        enc.encode_texts(["a dog"])
        assert _opt_folder(enc).parent == tmp_path / "cache"
    finally:
        os.chmod(model / "textual", 0o755)


def test_the_cache_folder_when_beside_the_model_cannot_be_written(model, tmp_path, monkeypatch):
    real_mkdir = onnx_encoder.Path.mkdir

    def mkdir(self, *a, **kw):
        if self.parent == model / "textual" and ".opt." in self.name:
            raise PermissionError(13, "read-only", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(onnx_encoder.Path, "mkdir", mkdir)
    enc = OnnxClipEncoder(model, short_context=False, cache_dir=tmp_path / "cache")
    out = enc.encode_texts(QUERIES)
    assert _opt_folder(enc).parent == tmp_path / "cache"
    monkeypatch.undo()
    plain = OnnxClipEncoder(model, short_context=False, optimized_copy=False).encode_texts(QUERIES)
    assert np.abs(out - plain).max() <= 1e-6


def test_a_copy_that_differs_is_not_used(model, monkeypatch):
    real = onnx_encoder._build_optimized
    monkeypatch.setattr(onnx_encoder, "_build_optimized", lambda src, tmp, key: real(src, tmp, key) and False)
    enc = OnnxClipEncoder(model)
    enc.encode_texts(["a dog"])
    assert ".opt." not in str(enc.session_paths["textual"])
    assert list((model / "textual").glob("*.opt.*.none"))  # remembered
    assert not [p for p in (model / "textual").iterdir() if p.is_dir()]  # no temp folder left
