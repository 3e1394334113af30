#!/usr/bin/env bash
# Prepare .whl/ for benchmarks/gpu_check.sh on a lent GPU machine (run here: it needs a registry
# and python3.12, the device's Python). Everything the check may need that the device image
# lacks, small enough to carry (≤ 64 MiB with the checkout; OpenCV and SciPy are not needed):
#   - sss-rt as a cp312 wheel with its compiled CPU kernels (no build there), without the bundled
#     model (30 MB, carried once in the checkout; gpu_check.sh links it into the install);
#   - onnx + protobuf, click, threadpoolctl, google-crc32c, pytest and its dependencies;
#   - pycuda's sdist and its pure dependencies (DEVICE_WHEELS, default ../shared/device-wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY312="${PY312:-python3.12}"
WHEELS="${DEVICE_WHEELS:-../shared/device-wheels}"
rm -rf .whl && mkdir -p .whl
cp "$WHEELS"/*.whl "$WHEELS"/*.tar.gz .whl/
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --no-deps -d .whl \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 \
  onnx protobuf ml_dtypes typing_extensions click threadpoolctl google-crc32c pytest pluggy \
  iniconfig packaging pygments
tree=$(mktemp -d)
git ls-files | grep -v '^sss_rt/data/default.onnx$' | tar cf - -T - | tar xf - -C "$tree"
"$PY312" -m pip wheel -q --no-deps -w .whl "$tree"
rm -rf "$tree"
du -sh .whl
ls .whl
