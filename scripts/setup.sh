#!/usr/bin/env bash
# Sets up this checkout: a .venv with pixquery, its test tools and the tiny random-weight test
# models. No torch: the runtime is ONNX Runtime, and the test models are written with numpy + onnx.
# Safe to run again (it only adds what is missing).
#
# Options (environment): PYTHON=python3.12, the interpreter for the venv; PIXQUERY_EXTRAS, the
# extras to install (default: dev). Tests that need a missing extra skip and say which:
#   ann      annoy + hnswlib, compiled from source (~35 s more): tests marked `ann`
#   browser  playwright (165 MB; also needs a Chromium): tests/test_browser.py
#   torch    torch + open_clip (several GB): tests marked `torch` (the open_clip comparisons),
#            `open_clip:` models and `pixquery export`
#   cluster-tests  Ray + moto's S3 API server: tests marked `ray` (tests/test_ray_engine.py)
#   milvus   pymilvus + milvus-lite (the Milvus engine): tests marked `milvus`
# e.g. PIXQUERY_EXTRAS=dev,ann,browser,torch,cluster-tests,milvus,milvus-standalone bash scripts/setup.sh   (.ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${PIXQUERY_EXTRAS:-dev}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip"
if [[ ",$EXTRAS," == *",torch,"* ]] && ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  # PyPI's torchvision does not import beside every torch build; this pair imports together, and
  # pinning it first keeps the extra from pulling another multi-GB build.
  "$PIP" install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
"$PIP" install --quiet -e ".[$EXTRAS]"
.venv/bin/python scripts/make_tiny_models.py
echo "pixquery is installed in .venv: try  .venv/bin/pixquery demo"
