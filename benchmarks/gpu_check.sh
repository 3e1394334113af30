#!/usr/bin/env bash
# Every GPU check in one go, for a lent device machine (one NVIDIA GPU, no network), ≤ 8 min.
#
# Prepare here (a registry is reachable here, not there), then carry .whl:
#   mkdir -p .whl && cp ../shared/device-wheels/* .whl/ && pip download -q -d .whl setuptools wheel
#   device run: bash benchmarks/gpu_check.sh        (carry: [".whl"], timeout_s: 540)
#
# 1. pycuda from its sdist, built without isolation against this machine's CUDA and NumPy;
#    `import pycuda.autoprimaryctx` must work before anything else runs.
# 2. the kernels for sm_75..sm_90 (kernels/compile_check.py), the GPU tests (required, not
#    skipped: SSS_RT_REQUIRE_GPU=1), kernel parity at three sizes under compute-sanitizer
#    memcheck, racecheck and synccheck.
# 3. benchmarks/harness.py gpu_check: parity and timings vs the CPU and the PyTorch-ops peer,
#    end to end with the PyTorch CUDA backend, TensorRT where installed. It writes
#    benchmarks/results/gpu.json and benchmarks/RESULTS-gpu.md (copied to $OUT to bring back).
# Any failure stops the script with a non-zero status; the log is $OUT/gpu_check.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/sss-gpu-check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SSS_RT_REQUIRE_GPU=1
exec > >(tee "$OUT/gpu_check.log") 2>&1

step() { echo "== $* ($(date +%T))"; }
step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
nvcc --version | tail -2
export CUDA_ROOT="${CUDA_ROOT:-$(dirname "$(dirname "$(command -v nvcc)")")}"

step "pycuda (from its sdist, no build isolation)"
python3 -m pip install -q --no-index --find-links .whl setuptools wheel pytools platformdirs mako siphash24
python3 -m pip install -q --no-index --find-links .whl --no-build-isolation pycuda
python3 -c "import pycuda.autoprimaryctx, pycuda.driver as d; print('pycuda', d.get_version(), d.Device(0).name())"

step "sss-rt"
python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -c "from sss_rt.cli.info import gpu_parts; [print(f'{k}: {v}') for k, v in gpu_parts().items()]"

step "compile table"
python3 kernels/compile_check.py

step "GPU tests"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_cuda_emulated.py -x

step "compute-sanitizer"
for tool in memcheck racecheck synccheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 3 \
    python3 benchmarks/harness.py gpu_parity '{"sizes": [[7, 300], [37, 531], [64, 96]]}' >/dev/null
  echo "$tool: clean"
done

step "benchmark"
python3 benchmarks/harness.py gpu_check '{"runs": 10}' > "$OUT/gpu.json"
cp benchmarks/RESULTS-gpu.md "$OUT/"
cat benchmarks/RESULTS-gpu.md
step "done"
