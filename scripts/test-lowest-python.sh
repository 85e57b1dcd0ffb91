#!/usr/bin/env bash
# The lowest Python that pyproject.toml's requires-python claims, tested: a venv of its own
# (.venv-lowest) with the plain package and the dev tools, then the tests that need no extra.
# A claim nobody runs is a guess: .ci/run calls this, and it fails when no such interpreter is found
# (give one with PYTHON_LOWEST=/path/to/python3.X, or raise requires-python to what is tested).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOWEST=$("$PY" -c 'import re, tomllib; s = tomllib.load(open("pyproject.toml", "rb"))["project"]["requires-python"]; print(re.fullmatch(r">=\s*(3\.\d+)", s.strip()).group(1))')
find_python() {
  # PATH first, then pyenv's builds (a pyenv shim on PATH may exist and still refuse to run)
  for p in ${PYTHON_LOWEST:-} "$(command -v "python$LOWEST" 2>/dev/null || true)" \
           "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$LOWEST".*/bin/python; do
    [ -n "$p" ] && [ -x "$p" ] && "$p" -c "" 2>/dev/null && { echo "$p"; return; }
  done
  return 1
}
if ! INTERP=$(find_python); then
  echo "requires-python says >=$LOWEST but no python$LOWEST was found to test it: set PYTHON_LOWEST" >&2
  exit 1
fi
got=$("$INTERP" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$got" = "$LOWEST" ] || { echo "$INTERP is Python $got, not $LOWEST" >&2; exit 1; }
VENV=.venv-lowest
[ -x "$VENV/bin/python" ] || "$INTERP" -m venv "$VENV"
"$VENV/bin/pip" install --quiet -e ".[dev]"
"$VENV/bin/python" scripts/make_tiny_models.py >/dev/null
echo "testing on $("$VENV/bin/python" --version) ($INTERP)"
# Everything that needs no extra (the marked tests need torch / annoy / Ray / Milvus, which the main
# run covers on the default Python) and is not slow.
"$VENV/bin/python" -m pytest -q -m "not (torch or ann or ray or milvus or milvus_standalone or slow)" \
  --ignore tests/test_browser.py "$@"
