#!/usr/bin/env bash
# Installs the two peers of bench/ingest_vs_peers.py in their own virtual environments (outside
# this repository) and places random-weight models where their own loaders look, so that both run
# offline and unmodified. Needs: python3.11 (any 3.10+), pip access to PyPI, and pixquery's venv
# (.venv, with torch + open_clip: `pip install -e '.[torch]'`) for the rclip ONNX export.
#
#   bash bench/peers/setup.sh            # PEERS=/work/peers by default
set -euo pipefail
PEERS=${PEERS:-/work/peers}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
mkdir -p "$PEERS"

# rclip 3.3.0 (ONNX Runtime, ViT-B/32 at 256 px)
[ -x "$PEERS/rclip-venv/bin/rclip" ] || { "$PY" -m venv "$PEERS/rclip-venv" && "$PEERS/rclip-venv/bin/pip" install -q rclip==3.3.0; }
# clip-retrieval 2.45.0 (torch); it needs torch 2.14.1 + torchvision 0.29.1 and setuptools<81 (pkg_resources)
[ -x "$PEERS/clip-retrieval-venv/bin/clip-retrieval" ] || { "$PY" -m venv "$PEERS/clip-retrieval-venv" &&
  "$PEERS/clip-retrieval-venv/bin/pip" install -q "setuptools<81" torch==2.14.1 torchvision==0.29.1 clip-retrieval==2.45.0; }

# Models (seeded random weights)
[ -f "$PEERS/rclip-data/ViT-B-32-256-datacomp_s34b_b86k/visual.onnx" ] ||
  "$REPO/.venv/bin/python" "$REPO/bench/peers/make_peer_models.py" rclip --out "$PEERS/rclip-data"
[ -f "$PEERS/rclip-data-224/ViT-B-32-256-datacomp_s34b_b86k/visual.onnx" ] ||
  "$REPO/.venv/bin/python" "$REPO/bench/peers/make_peer_models.py" rclip --out "$PEERS/rclip-data-224" --arch ViT-B-32
[ -f "$PEERS/clip-retrieval-data/ViT-B-32-random.pt" ] ||
  "$PEERS/clip-retrieval-venv/bin/python" "$REPO/bench/peers/make_peer_models.py" clip-retrieval --out "$PEERS/clip-retrieval-data"
echo "peers ready in $PEERS"
