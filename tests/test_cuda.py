"""GPU post-processing on a real GPU (pycuda). Without one only the packaging and the error
path run here; the same kernels and launcher run on the CPU in tests/test_cuda_emulated.py.
The parity tests below need pycuda and a CUDA GPU (marked ``gpu``; benchmarks/gpu_check.sh)."""

from __future__ import annotations

import importlib.util
import os
import re

import numpy as np
import pytest
from conftest import structured_scene

from sss_rt.errors import BackendUnavailableError
from sss_rt.postprocess import cuda, postprocess
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import filter_channels

TOL = 2e-4


def _gpu_available() -> bool:
    if importlib.util.find_spec("pycuda") is None:
        return False
    try:
        cuda.pycuda_runtime()
    except BackendUnavailableError:
        return False
    return True


if os.environ.get("SSS_RT_REQUIRE_GPU") == "1" and not _gpu_available():  # the GPU check script
    raise RuntimeError("SSS_RT_REQUIRE_GPU=1 but pycuda or the GPU is not usable")
gpu = pytest.mark.skipif(not _gpu_available(), reason="needs pycuda and a CUDA GPU")


def test_kernel_source_is_packaged_and_declares_every_kernel():
    src = cuda.kernel_source()
    declared = set(re.findall(r'extern "C" __global__ void (\w+)\(', src))
    assert set(cuda.KERNELS) == declared
    assert f"#define ROW_TILE {cuda.ROW_TILE}" in src
    assert f"#define GRAM_TILE {cuda.GRAM_TILE}" in src
    assert f"#define REDUCE_THREADS {cuda.REDUCE_THREADS}" in src


@pytest.mark.skipif(_gpu_available(), reason="a GPU is present")
def test_without_pycuda_or_gpu_the_message_says_what_to_do():
    with pytest.raises(BackendUnavailableError, match=r"pycuda|CUDA"):
        cuda.CudaPostprocessor()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("h,w,band_rows", [(181, 243, None), (97, 531, 40), (7, 300, None)])
def test_gpu_matches_cpu_exact_mode(dtype, h, w, band_rows):
    image, feats = structured_scene(h, w, seed=6)
    feats = feats.astype(dtype)
    exact = feats.astype(np.float32)  # the same values on both sides
    ref, ref_basis = postprocess(exact, image)
    pp = cuda.CudaPostprocessor(band_rows=band_rows)
    embedding, basis, kept = pp.run(feats, image, keep_features=True)
    np.testing.assert_allclose(basis.components, ref_basis.components, atol=1e-5)
    assert np.abs(embedding - ref).max() <= TOL
    np.testing.assert_array_equal(kept, exact)
    filtered = np.moveaxis(pp.filter_channels(exact, image), 0, -1)
    ref_filtered = filter_channels(exact, image, PostprocessConfig())
    assert np.abs(filtered - ref_filtered).max() <= 1e-4 * np.abs(ref_filtered).max()


@pytest.mark.gpu
@gpu
def test_gpu_takes_device_arrays_and_refuses_strided_ones():
    import pycuda.gpuarray as gpuarray

    image, feats = structured_scene(64, 96, seed=7)
    pp = cuda.CudaPostprocessor()
    by_array = pp.run(gpuarray.to_gpu(feats), image)[0]
    np.testing.assert_array_equal(by_array, pp.run(feats, image)[0])
    strided = gpuarray.to_gpu(np.ascontiguousarray(np.moveaxis(feats, 0, -1))).transpose((2, 0, 1))
    with pytest.raises(ValueError, match="C-contiguous"):
        pp.run(strided, image)


def test_torch_ops_peer_matches_cpu_exact_mode():
    """The PyTorch-ops peer the GPU check times the kernels against computes the same thing."""
    torch = pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from peer_torch_postprocess import postprocess as torch_postprocess

    image, feats = structured_scene(48, 64, seed=9)
    ref, ref_basis = postprocess(feats, image)
    got, basis = torch_postprocess(torch.from_numpy(feats), image)
    np.testing.assert_allclose(basis.components, ref_basis.components, atol=1e-5)
    assert np.abs(got - ref).max() <= TOL
