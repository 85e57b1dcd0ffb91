"""Tiny random-weight CLIP models for tests (import from conftest.py or a test module).

    from conftest_models import tiny_model_dir, tiny_vit, tiny_rn50, tiny_arch

`tiny_model_dir("vit" | "rn50")` returns models/tiny-vit-b-32 or models/tiny-rn50 at the repo root,
writing them with scripts/make_tiny_models.py on a fresh clone (about a second, numpy and onnx only:
no torch). Loading them needs only the default runtime: `load_encoder(tiny_model_dir())` goes
through the same code as a real model.
"""

from __future__ import annotations

import fcntl
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
KINDS = {"vit": "tiny-vit-b-32", "rn50": "tiny-rn50"}
_FILES = (
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
    "open_clip_model.safetensors",  # the torch weights the ONNX-vs-torch tests compare against
)


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in _FILES)


def _script():
    spec = importlib.util.spec_from_file_location("make_tiny_models", ROOT / "scripts" / "make_tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_model_dir(kind: str = "vit") -> Path:
    path = MODELS / KINDS[kind]
    if _complete(path):
        return path
    MODELS.mkdir(exist_ok=True)
    with open(MODELS / ".lock", "w") as lock:  # parallel test workers: one writes, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _complete(path):
            _script().make_tiny_model(kind, MODELS, force=True)
    return path


@pytest.fixture(scope="session")
def tiny_vit() -> Path:
    return tiny_model_dir("vit")


@pytest.fixture(scope="session")
def tiny_rn50() -> Path:
    return tiny_model_dir("rn50")


@pytest.fixture(scope="session", params=sorted(KINDS))
def tiny_arch(request) -> Path:
    """Each tiny architecture in turn (the test runs once per architecture)."""
    return tiny_model_dir(request.param)
