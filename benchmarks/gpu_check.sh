#!/usr/bin/env bash
# Every GPU check in one go, for a lent device machine (one NVIDIA GPU, no network).
# Before the call, copy pycuda's sdist and wheels into .whl/ (git-ignored) and carry it:
#   mkdir -p .whl && cp ../shared/device-wheels/* .whl/
#   device run: bash benchmarks/gpu_check.sh   (carry: [".whl"])
# Writes its logs and JSON under $OUT (or /tmp/sss-gpu-check).
set -uo pipefail
OUT="${OUT:-/tmp/sss-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -m pip install -q --no-index --find-links .whl pycuda
  python3 -m pip install -q --no-deps --no-build-isolation -e .
  bash kernels/compile_check.sh
  python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda.py
  python3 -m pytest -q -p no:cacheprovider tests/test_postprocess_modes.py
  # parity at 3 sizes (fp32 ≤ 1e-4, fp16 ≤ 2e-3 against the CPU exact mode) and timings
  # against the PyTorch-ops peer and the CPU path
  python3 benchmarks/harness.py gpu_check '{"runs": 10}' > "$OUT/gpu_check.json"
  cat "$OUT/gpu_check.json"
} 2>&1 | tee "$OUT/gpu_check.log"
