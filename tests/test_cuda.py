"""GPU post-processing (pycuda). Without a GPU only the packaging and the error path run; the
parity tests against the CPU exact mode need pycuda and a CUDA GPU (marked ``gpu``)."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from conftest import structured_scene

from sss_rt.errors import BackendUnavailableError
from sss_rt.postprocess import cuda, postprocess
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import filter_channels

TOL = 1e-4


def _gpu_available() -> bool:
    if importlib.util.find_spec("pycuda") is None:
        return False
    try:
        cuda._pycuda()
    except BackendUnavailableError:
        return False
    return True


gpu = pytest.mark.skipif(not _gpu_available(), reason="needs pycuda and a CUDA GPU")


def test_kernel_source_is_packaged_and_declares_every_kernel():
    src = cuda.kernel_source()
    declared = set(re.findall(r'extern "C" __global__ void (\w+)\(', src))
    assert set(cuda._KERNELS) == declared
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
def test_gpu_matches_cpu_exact_mode(dtype):
    image, feats = structured_scene(181, 243, seed=6)
    feats = feats.astype(dtype).astype(np.float32)  # the same values on both sides
    ref, ref_basis = postprocess(feats, image)
    result = cuda.CudaPostprocessor()(feats.astype(dtype), image, return_filtered=True)
    np.testing.assert_allclose(result.basis.components, ref_basis.components, atol=1e-5)
    assert np.abs(result.embedding - ref).max() <= TOL
    filtered = np.moveaxis(result.filtered.get(), 0, -1)
    assert np.abs(filtered - filter_channels(feats, image, PostprocessConfig())).max() <= TOL


@pytest.mark.gpu
@gpu
def test_gpu_takes_a_device_pointer():
    import pycuda.gpuarray as gpuarray

    image, feats = structured_scene(64, 96, seed=7)
    on_gpu = gpuarray.to_gpu(feats)
    pp = cuda.CudaPostprocessor()
    by_ptr = pp(int(on_gpu.gpudata), image, shape=feats.shape, dtype=np.float32)
    by_array = pp(feats, image)
    np.testing.assert_array_equal(by_ptr.embedding, by_array.embedding)


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
