"""ONNX Runtime settings of the encoder: providers (GPU when present, clean CPU fallback), threads,
spinning, warm-up, batch size. No GPU is needed: onnxruntime is told it has CUDA and fails on it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from pixquery.encoders.onnx import OnnxClipEncoder
from pixquery.errors import PixqueryError


@pytest.fixture
def fake_cuda(monkeypatch):
    """onnxruntime claims a CUDA provider; creating a session on it fails like a CUDA build on a
    machine without a usable GPU or driver. Records every session's providers and options."""
    real = ort.InferenceSession
    calls = []

    def session(path, opts=None, providers=None, **kw):
        names = [p[0] if isinstance(p, tuple) else p for p in (providers or [])]
        calls.append((names, opts))
        if "CUDAExecutionProvider" in names:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, opts, providers=providers, **kw)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    return calls


def test_cuda_is_tried_first_and_falls_back_to_the_cpu(tiny_model, fake_cuda, caplog):
    enc = OnnxClipEncoder(tiny_model)
    out = enc.encode_images(np.zeros((2, 3, 224, 224), np.float32))
    assert out.shape == (2, enc.dim)
    assert [names for names, _ in fake_cuda] == [
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ["CPUExecutionProvider"],
    ]
    assert enc.providers == {"visual": "CPUExecutionProvider"} and enc.device == "cpu"
    assert enc.preferred_batch_size == 32
    assert "GPU execution provider failed" in caplog.text


def test_cpu_provider_never_asks_for_cuda(tiny_model, fake_cuda, monkeypatch):
    monkeypatch.setenv("PIXQUERY_PROVIDER", "cpu")
    enc = OnnxClipEncoder(tiny_model)
    enc.encode_texts(["a dog"])  # (the first time, the optimised copy of the text tower is made: more sessions)
    assert fake_cuda and all(names == ["CPUExecutionProvider"] for names, _ in fake_cuda)
    with pytest.raises(PixqueryError, match="provider must be one of"):
        OnnxClipEncoder(tiny_model, provider="tpu")


def test_session_options_threads_and_spinning(tiny_model, fake_cuda, monkeypatch):
    monkeypatch.setenv("PIXQUERY_PROVIDER", "cpu")
    enc = OnnxClipEncoder(tiny_model, threads=2, text_threads=1)
    enc.warm_up(("textual", "visual"))
    (text_names, text_opts), (img_names, img_opts) = fake_cuda[-2:]  # before them: making the optimised copy, once
    assert text_opts.intra_op_num_threads == 1 and img_opts.intra_op_num_threads == 2
    assert img_opts.inter_op_num_threads == 1
    assert img_opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert img_opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # off by default
    monkeypatch.setenv("PIXQUERY_ORT_SPIN", "1")
    monkeypatch.setenv("PIXQUERY_THREADS", "3")
    enc = OnnxClipEncoder(tiny_model)
    assert enc.spin is True and enc.threads == 3 and enc.text_threads == 3


def test_warm_up_makes_the_first_query_need_no_session(tiny_model):
    enc = OnnxClipEncoder(tiny_model)
    enc.warm_up()
    assert list(enc._sessions) == ["textual"]  # indexing-only sessions are not made for a query
    assert enc.encode_texts(["a red car"]).shape == (1, enc.dim)


def test_pipeline_takes_the_encoders_preferred_batch_size(tiny_model, tmp_path):
    from photos import make_photos
    from pixquery.ingest.pipeline import embed_files
    from pixquery.ingest.scan import FileEntry

    enc = OnnxClipEncoder(tiny_model)
    files = make_photos(tmp_path, 3, size=(64, 48))
    entries = [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    stats = embed_files(entries, enc, lambda b: None, batch_size=None, decoder="thread")
    assert stats.embedded == 3 and stats.window >= 3 * 32


def _fresh_copy(model, dest):
    import shutil

    return shutil.copytree(
        model, dest, ignore=shutil.ignore_patterns("*.int8.*", "*.ctx.*", "*.opt.*", "*.none", "*.safetensors")
    )


def test_short_context_text_tower_gives_the_same_embeddings(tiny_model, tmp_path):
    model = _fresh_copy(tiny_model, tmp_path / "m")
    queries = ["a dog", "a photo of a red sports car parked near the beach at sunset, seen from above", "x", "a dog"]
    full = OnnxClipEncoder(model, short_context=False).encode_texts(queries)
    enc = OnnxClipEncoder(model)
    short = enc.encode_texts(queries)
    np.testing.assert_allclose(short, full, atol=1e-5)
    assert enc._sessions["textual"].get_inputs()[0].shape[1] == "context"  # any length now
    copy = next((model / "textual").glob("model.ctx.*.onnx"))
    mtime = copy.stat().st_mtime_ns
    OnnxClipEncoder(model).encode_texts(["again"])
    assert copy.stat().st_mtime_ns == mtime  # made once, then reused


def test_short_context_falls_back_to_the_full_tower(tiny_model, tmp_path, monkeypatch):
    from pixquery.encoders import onnx as onnx_encoder

    model = _fresh_copy(tiny_model, tmp_path / "m")
    monkeypatch.setattr(onnx_encoder, "_short_context_graph", lambda src, context: None)  # a graph it cannot change
    enc = OnnxClipEncoder(model)
    assert enc.encode_texts(["a dog"]).shape == (1, enc.dim)
    assert enc._sessions["textual"].get_inputs()[0].shape[1] == 77
    assert list((model / "textual").glob("*.none"))  # remembered: the check is not redone at each start
