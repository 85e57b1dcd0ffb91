"""The API keeps its OpenAPI contract: schemathesis, run as its CLI against a real `pixquery serve`.

Every operation of /api/openapi.json, every phase (examples, coverage, fuzzing, stateful: chains
of calls following the links it infers), `--checks all`: no 5xx ever, every status and body as the
schema says, schema-valid requests accepted and invalid ones rejected, the token enforced on
every operation. The library is tiny (photos, a video, a calibrated threshold so that
`threshold=auto` is valid), the model the random-weight test model.

The rules of GET /api/search across its query parameters (at least one of them, at most 32 list
values, q's inline syntax) are taught to the generator by tests/contract/hooks.py; tests/contract/schemathesis.toml holds the one
per-operation setting (undecodable image bytes are schema-valid but answered 400).
Fixed seed, so a CI failure reproduces; PIXQUERY_CONTRACT_SEED and PIXQUERY_CONTRACT_EXAMPLES
widen a local run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_server_support import TOKEN, build_library, running_server

CONTRACT = Path(__file__).resolve().parent / "contract"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("schemathesis") is None, reason="schemathesis is not installed (the dev extra)"
)


def _schemathesis() -> list[str]:
    exe = shutil.which("schemathesis", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("contract")
    photos = root / "photos"
    if importlib.util.find_spec("av") is not None:  # a video, so that the video operations find one
        from videos import make_video

        photos.mkdir(parents=True)
        make_video(photos / "clip.mp4", [(2.0, 11), (2.0, 12)], fps=10, size=(160, 96))
    lib_path, photos = build_library(root, tiny_model, 6)

    from pixquery.catalog import Catalog
    from pixquery.encoders.registry import load_encoder

    enc = load_encoder(str(tiny_model))
    cat = Catalog(lib_path / "catalog.sqlite")
    try:
        cat.set_threshold(enc.name, enc.fingerprint, 0.45, source="contract test")
    finally:
        cat.close()
    with running_server(lib_path, tiny_model, root / "server.log") as server:
        server.root = root
        yield server


def test_every_operation_keeps_the_openapi_contract(served):
    seed = os.environ.get("PIXQUERY_CONTRACT_SEED", "20261129")
    examples = os.environ.get("PIXQUERY_CONTRACT_EXAMPLES", "25")
    cmd = [
        *_schemathesis(),
        "--no-color",
        "--config-file",
        str(CONTRACT / "schemathesis.toml"),
        "run",
        f"{served.url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        examples,
        "--seed",
        seed,
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(served.root / "schemathesis-report"),
    ]
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="hooks",
        PYTHONPATH=os.pathsep.join(filter(None, [str(CONTRACT), os.environ.get("PYTHONPATH")])),
    )
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=served.root, timeout=400)
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found contract violations (seed {seed}):\n{out[-20000:]}"
    # It really ran: every operation of the schema was tested, in every phase, with no failure.
    with served.client() as client:
        paths = client.get("/api/openapi.json").json()["paths"]
    operations = sum(
        1 for item in paths.values() for method in item if method in ("get", "post", "put", "patch", "delete")
    )
    assert operations >= 10 and f"Tested: {operations}" in out, out[-3000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in out, f"{phase} did not pass:\n{out[-5000:]}"
    assert "No issues found" in out, out[-3000:]
    # Not one answer was a 5xx, and the server logged no traceback (running_server checks that too).
    assert "Traceback" not in served.log()
