"""Shared fixtures: the tiny random-weight models, photo folders, and ../shared/data when present."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(TESTS))  # test helper modules (photos.py, conftest_models.py)

# Tests never touch the network: a missing model must fail fast, not hang on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# marker -> (modules it needs, how to get them); the default setup (scripts/setup.sh) has neither, CI has both.
OPTIONAL = {
    "torch": (("torch", "open_clip"), "the [torch] extra: pip install 'pixquery[torch]'"),
    "ann": (("annoy", "hnswlib"), "the [ann] extra, compiled from source: pip install 'pixquery[ann]'"),
    "ray": (
        ("ray", "pyarrow", "fsspec", "s3fs", "moto", "boto3"),
        "a real Ray cluster and S3 API server: pip install 'pixquery[cluster-tests]'",
    ),
    "milvus": (
        ("pymilvus", "milvus_lite"),
        "the [milvus] extra: pip install 'pixquery[milvus]' "
        "(or [milvus-lite3] in a venv of its own: bash scripts/test-milvus-lite3.sh)",
    ),
    "ocr": (("rapidocr", "rapidfuzz"), "the [ocr] extra: pip install 'pixquery[ocr]'"),
    "milvus_standalone": (
        ("pymilvus", "milvus"),
        "a Milvus standalone server: pip install 'pixquery[milvus,milvus-standalone]' (linux x86_64)",
    ),
    "formats": (("rawpy", "tifffile"), "camera RAW: pip install 'pixquery[formats,dev]'"),
}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Tests marked `torch` (open_clip comparisons) or `ann` (annoy/hnswlib indexes) skip, saying
    why, where those libraries are not installed; they fail instead for the markers named in
    $PIXQUERY_TESTS_NEED (CI sets it: there a missing library is a broken setup, not a choice)."""
    required = {m.strip() for m in os.environ.get("PIXQUERY_TESTS_NEED", "").split(",")}
    for marker, (modules, how) in OPTIONAL.items():
        if item.get_closest_marker(marker):
            missing = [m for m in modules if importlib.util.find_spec(m) is None]
            if missing:
                message = f"needs {' and '.join(missing)} ({how}), not installed here"
                if marker in required:
                    pytest.fail(message, pytrace=False)
                pytest.skip(message)


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip: a new user's checkout has no ../shared."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data beside the checkout); absent here")
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny ViT-B/32-shaped random model, made by scripts/make_tiny_models.py if missing."""
    from conftest_models import tiny_model_dir

    return Path(tiny_model_dir("vit"))


@pytest.fixture(scope="session")
def tiny_rn50() -> Path:
    from conftest_models import tiny_model_dir

    return Path(tiny_model_dir("rn50"))


@pytest.fixture
def library_dir(tmp_path) -> Path:
    return tmp_path / "library"
