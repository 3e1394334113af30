#!/usr/bin/env bash
# Every GPU check in one go, for a lent device machine (one NVIDIA GPU, no network): ≤ 6 min on
# an H100 including installs. `--rehearse` runs every step here, without a GPU (CI does).
#
# Prepare here (a registry is reachable here, not there), then carry .whl (≈ 14 MB; with the
# checkout (≈ 36 MB) ≈ 50 MB of the 64 MiB a run may carry):
#   bash benchmarks/gpu_check_prepare.sh        # → .whl/: sss-rt cp312 wheel, pycuda sdist, deps
#   device run: bash benchmarks/gpu_check.sh    (carry: [".whl"], timeout_s: 480)
#
# Steps (each timed; a failing step is reported and the next ones still run, so one failure never
# costs the other figures; the exit status is non-zero if any gate failed):
#  1. machine: nvidia-smi, nvcc, Python.
#  2. Python packages: the modules the check imports; any missing one installed from .whl (no
#     network there), then sss-rt from its prebuilt wheel (editable install as a fallback).
#  3. pycuda, built in the background from its sdist with an explicit configuration
#     (benchmarks/pycuda_siteconf.py) while the CuPy steps run; CuPy alone carries every figure.
#  4. sss-rt info (the runtimes it sees), 5. the GPU tests on CuPy (SSS_RT_REQUIRE_GPU=1: fail,
#     never skip), 6. compute-sanitizer memcheck / racecheck / synccheck on small parity cases
#     (reports in $OUT/sanitizer-*.log), 7. the measurements and gates (benchmarks/gpu_check.py:
#     $OUT/gpu.json, $OUT/RESULTS-gpu.md), 8. pycuda: its GPU tests and parity if the build
#     finished in time.
# The log is $OUT/gpu_check.log, step times $OUT/steps.tsv.
set -uo pipefail
cd "$(dirname "$0")/.."
REHEARSE=0
[[ "${1:-}" == "--rehearse" ]] && REHEARSE=1
OUT="${OUT:-/tmp/sss-gpu-check}"
mkdir -p "$OUT"
: > "$OUT/steps.tsv"
exec > >(tee "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
PY=python3
if (( REHEARSE )); then
  PY="${PYTHON:-python}"
  # the lent image lacks OpenCV, SciPy, scikit-image, OpenVINO, Pillow, tqdm: so does this run
  export PYTHONPATH="$PWD/benchmarks/rehearsal${PYTHONPATH:+:$PYTHONPATH}"
  export SSS_RT_REHEARSE=1 SSS_RT_REHEARSE_RUNTIMES=cupy
  REH="--rehearse"
else
  export SSS_RT_REQUIRE_GPU=1
  REH=""
fi
START=$(date +%s)
FAILED=()
CURRENT="" T0=0
step() {  # step NAME: close the previous step's timing, open this one's
  local now; now=$(date +%s)
  [[ -n "$CURRENT" ]] && printf '%s\t%d\n' "$CURRENT" $((now - T0)) >> "$OUT/steps.tsv"
  CURRENT="$1" T0=$now
  echo "== $1 (+$((now - START)) s)"
}
gate() {  # gate NAME COMMAND...: run it, record a failure without stopping
  local name="$1"; shift
  if "$@"; then echo "-- $name: passed"; else echo "-- $name: FAILED ($?)"; FAILED+=("$name"); fi
}

step "machine"
if (( REHEARSE )); then
  echo "rehearsal: no GPU; $($PY --version)"
else
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  nvcc --version | tail -2 || true
  $PY --version
fi

step "python packages"
SITE=/tmp/sss-gpu-site
if (( REHEARSE )); then
  echo "rehearsal: installs skipped (this environment's sss-rt is used)"
else
  mkdir -p "$SITE"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  for pair in typing_extensions:typing_extensions ml_dtypes:ml_dtypes google.protobuf:protobuf \
      onnx:onnx click:click threadpoolctl:threadpoolctl google_crc32c:google_crc32c \
      pygments:pygments packaging:packaging pluggy:pluggy iniconfig:iniconfig pytest:pytest; do
    mod="${pair%%:*}" dist="${pair##*:}"
    if ! $PY -c "import $mod" 2>/dev/null; then
      echo "installing $dist (missing here)"
      $PY -m pip install -q --no-index --no-deps --target "$SITE" .whl/"${dist//-/_}"-*.whl \
        || FAILED+=("install $dist")
    fi
  done
  if ls .whl/sss_rt-*-cp312-*.whl >/dev/null 2>&1 \
      && $PY -m pip install -q --no-index --no-deps --target "$SITE" .whl/sss_rt-*-cp312-*.whl; then
    ln -sf "$PWD/sss_rt/data/default.onnx" "$SITE/sss_rt/data/default.onnx"  # not in the wheel
    echo "sss-rt from its wheel"
  else
    echo "sss-rt wheel unusable here: editable install"
    gate "install sss-rt" $PY -m pip install -q --no-deps --no-build-isolation -e .
  fi
fi
gate "import" $PY -c "import numpy, torch, onnx, onnxruntime, sss_rt.postprocess.cuda, sss_rt.extractor; print('imports ok')"

step "pycuda build (background)"
PYCUDA_SITE=/tmp/sss-gpu-pycuda
PYCUDA_PID=""
if (( REHEARSE )); then
  $PY benchmarks/pycuda_siteconf.py --output "$OUT/aksetup-defaults.py" \
    || echo "rehearsal: no toolkit or driver here, as expected; the build is skipped"
elif $PY -c "import pycuda.driver" 2>/dev/null; then
  echo "pycuda already installed"
else
  export HOME_PYCUDA=/tmp/sss-pycuda-home
  mkdir -p "$HOME_PYCUDA" "$PYCUDA_SITE"
  if $PY benchmarks/pycuda_siteconf.py --output "$HOME_PYCUDA/.aksetup-defaults.py"; then
    cp "$HOME_PYCUDA/.aksetup-defaults.py" "$OUT/aksetup-defaults.py"
    $PY -m pip install -q --no-index --no-deps --target "$PYCUDA_SITE" \
      .whl/pytools-*.whl .whl/platformdirs-*.whl .whl/mako-*.whl .whl/siphash24-*.whl \
      > "$OUT/pycuda-build.log" 2>&1
    ( HOME="$HOME_PYCUDA" $PY -m pip install --no-index --no-deps --no-build-isolation \
        --target "$PYCUDA_SITE" .whl/pycuda-*.tar.gz >> "$OUT/pycuda-build.log" 2>&1 \
        && echo built > "$OUT/pycuda-built" ) &
    PYCUDA_PID=$!
    echo "building in the background (log: pycuda-build.log)"
  else
    echo "pycuda not built: no configuration (see above)"
  fi
fi

step "sss-rt info"
gate "sss-rt info" sh -c "$PY -m sss_rt info > '$OUT/info.txt' 2>&1"
grep -iE 'cuda|runtime|tensorrt|nvidia|nvcc|onnxruntime' "$OUT/info.txt" || cat "$OUT/info.txt"

step "GPU tests (CuPy)"
gate "GPU tests on CuPy" env SSS_RT_CUDA_RUNTIME=cupy $PY -m pytest -q -p no:cacheprovider \
  tests/test_cuda.py

step "compute-sanitizer"
for tool in memcheck racecheck synccheck; do
  sizes="7x300 37x531 64x96"
  [[ "$tool" != memcheck ]] && sizes="37x531"
  if (( REHEARSE )); then
    echo "rehearsal: $tool replaced by the plain run" > "$OUT/sanitizer-$tool.log"
    gate "$tool" $PY benchmarks/gpu_check.py parity $REH --runtime cupy --sizes $sizes
  else
    gate "$tool" compute-sanitizer --tool "$tool" --error-exitcode 3 \
      --log-file "$OUT/sanitizer-$tool.log" \
      $PY benchmarks/gpu_check.py parity --runtime cupy --sizes $sizes
  fi
  tail -3 "$OUT/sanitizer-$tool.log"
done

step "measurements and gates"
gate "gpu_check" $PY benchmarks/gpu_check.py check $REH --out "$OUT"

step "pycuda"
if [[ -n "$PYCUDA_PID" ]]; then
  budget=$(( 330 - ($(date +%s) - START) ))  # what is left of ~5.5 min
  for _ in $(seq 1 $(( budget > 0 ? budget : 0 ))); do
    kill -0 "$PYCUDA_PID" 2>/dev/null || break
    sleep 1
  done
  if kill -0 "$PYCUDA_PID" 2>/dev/null; then
    kill "$PYCUDA_PID" 2>/dev/null
    echo "pycuda build did not finish in time: not checked (CuPy carried every figure)"
  elif [[ -f "$OUT/pycuda-built" ]]; then
    export PYTHONPATH="$PYCUDA_SITE:$PYTHONPATH"
    gate "GPU tests on pycuda" env SSS_RT_CUDA_RUNTIME=pycuda $PY -m pytest -q \
      -p no:cacheprovider tests/test_cuda.py
    gate "parity on pycuda" $PY benchmarks/gpu_check.py parity --runtime pycuda \
      > "$OUT/pycuda-parity.json"
  else
    echo "pycuda build failed: $(grep -m1 -i 'error' "$OUT/pycuda-build.log" || echo see log)"
  fi
else
  echo "no pycuda build in this run"
fi

step "done"
echo "total $(( $(date +%s) - START )) s; steps (s):"
cat "$OUT/steps.tsv"
if (( ${#FAILED[@]} )); then
  echo "FAILED: ${FAILED[*]}"
  exit 1
fi
echo "every gate passed$( (( REHEARSE )) && echo ' (rehearsal: no GPU ran)')"
