#!/usr/bin/env bash
# The Milvus tests (marked `milvus`, in tests/test_indexes.py) against the current pymilvus 3.0 +
# milvus-lite 3.2: a pure-Python re-implementation of Milvus that has HNSW, embedded and as a
# `milvus-lite server` process. .venv has the [milvus] extra (pymilvus 2.5 + milvus-lite 2.5, the
# real Milvus engine), which cannot be installed beside it, so this uses a venv of its own,
# .venv-milvus3, with only what those tests need: pixquery (editable, without its dependencies), the
# [milvus-lite3] extra, numpy and faiss-cpu (what pixquery.indexes imports) and pytest. A re-run
# whose requirements are unchanged installs nothing. Arguments go to pytest (e.g. -x, -k HNSW).
# PIXQUERY_TESTS_NEED=milvus: a test that skips for a missing pymilvus or milvus-lite fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv-milvus3
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# The requirements, read from pyproject.toml so that their versions are written in one place.
REQS=$("$VENV/bin/python" - <<'EOF'
import re, tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
name = lambda r: re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]
reqs = [r for r in project["dependencies"] if name(r) in {"numpy", "faiss-cpu"}]
reqs += extras["milvus-lite3"]
reqs += [r for r in extras["dev"] if name(r) in {"pytest", "pytest-timeout"}]
print("\n".join(reqs))
EOF
)
STAMP="$VENV/.pixquery-requirements"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$REQS" ] || ! "$VENV/bin/python" -c "import pixquery.indexes, pymilvus, milvus_lite, pytest" 2>/dev/null; then
  mapfile -t REQ_ARRAY <<<"$REQS"
  "$VENV/bin/pip" install --quiet "${REQ_ARRAY[@]}"
  "$VENV/bin/pip" install --quiet --no-deps -e .
  printf '%s' "$REQS" >"$STAMP"
fi
"$VENV/bin/python" -c "import pymilvus, milvus_lite; print(f'pymilvus {pymilvus.__version__}, milvus-lite {milvus_lite.__version__}')"
PIXQUERY_TESTS_NEED=milvus "$VENV/bin/python" -m pytest -m milvus tests/test_indexes.py "$@"
