#!/usr/bin/env bash
# The GPU path, measured (#17): run from the repository root on an NVIDIA machine.
#
#   WHEELS=/path/to/wheels infra/gpu/bench.sh      # installs torch, spandrel, onnxruntime-gpu,
#                                                   # onnx, numpy, pillow from those wheels only
#   infra/gpu/bench.sh                              # uses what the machine's python already has
#
# The converted models must be in infra/models/out (`make models` here, carried to the machine),
# or MODELS=DIR. DEVICE=cpu checks the script on a machine without a GPU. Prints a table of
# seconds per input MP and PSNR, then one JSON line.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
if [ -n "${WHEELS:-}" ]; then
  "$PYTHON" -m venv .venv/gpu-bench
  PYTHON=.venv/gpu-bench/bin/python
  "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" \
    torch spandrel onnxruntime-gpu onnx numpy pillow
fi
if [ "${DEVICE:-cuda}" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PYTHON" infra/gpu/bench.py --models "${MODELS:-infra/models/out}" --device "${DEVICE:-cuda}" \
  --side "${SIDE:-512}" --runs "${RUNS:-5}"
