#!/usr/bin/env bash
# Compile every CUDA kernel for the architectures sss-rt supports (A100: sm_80, H100/H200: sm_90),
# warnings as errors. Runs in CI, which has nvcc but no GPU; a compile error fails CI.
set -euo pipefail
cd "$(dirname "$0")"
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for src in *.cu; do
  for arch in 80 90; do
    nvcc -std=c++17 -O3 -arch="sm_${arch}" -cubin --Werror all-warnings \
      -o "$out/${src%.cu}.sm_${arch}.cubin" "$src"
    echo "ok: $src sm_${arch} ($(stat -c %s "$out/${src%.cu}.sm_${arch}.cubin") bytes)"
  done
done
