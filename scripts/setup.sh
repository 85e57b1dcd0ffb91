#!/usr/bin/env bash
# Sets up this checkout: a .venv with pixquery and everything its tests use, and the tiny
# random-weight test models. Safe to run again (it only adds what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/pip"
# The [torch] extra (open_clip models, `pixquery export`, the ONNX-vs-torch checks) needs a torch
# and torchvision that import together (PyPI's torchvision does not import beside every torch
# build). This pair does; pinning it first keeps the extra from pulling another multi-GB build.
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  "$PIP" install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
"$PIP" install --quiet -e ".[dev,torch]"
.venv/bin/python scripts/make_tiny_models.py
echo "pixquery is installed in .venv: try  .venv/bin/pixquery demo"
