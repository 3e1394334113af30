"""GPU post-processing on a real GPU, through every usable CUDA runtime (CuPy, pycuda).

Without a GPU only the packaging and the error path run here; the same kernels and launcher run
on the CPU in tests/test_cuda_emulated.py. The parity tests need a GPU (marked ``gpu``;
benchmarks/gpu_check.sh runs them with ``SSS_RT_REQUIRE_GPU=1``, which fails instead of
skipping, and its rehearsal with ``SSS_RT_REHEARSE=1``, which runs them on the emulator)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re

import numpy as np
import pytest
from conftest import structured_scene

from sss_rt.cuda import ENV, RUNTIMES, cuda_runtime
from sss_rt.errors import BackendUnavailableError
from sss_rt.postprocess import cuda, postprocess
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import filter_channels

TOL = 2e-4


def _runtimes() -> list:
    """A ``pytest.param`` per usable runtime of GPU 0 (the emulated ones in a rehearsal)."""
    if os.environ.get("SSS_RT_REHEARSE") == "1":
        from cuda_emulator import Emulator

        emu = Emulator()
        kinds = os.environ.get("SSS_RT_REHEARSE_RUNTIMES", "cupy pycuda").split()
        return [pytest.param(emu.runtime(k), id=f"emulated-{k}") for k in kinds]
    found = []
    for name in RUNTIMES:
        if os.environ.get(ENV, name) != name or importlib.util.find_spec(name) is None:
            continue
        with contextlib.suppress(BackendUnavailableError):  # installed, no GPU
            found.append(pytest.param(cuda_runtime(0, name), id=name))
    return found


USABLE = _runtimes()
if os.environ.get("SSS_RT_REQUIRE_GPU") == "1" and not USABLE:  # the GPU check script
    raise RuntimeError("SSS_RT_REQUIRE_GPU=1 but no CUDA runtime can use a GPU here")
gpu = pytest.mark.skipif(not USABLE, reason="needs a CUDA GPU and CuPy or pycuda")


def test_kernel_source_is_packaged_and_declares_every_kernel():
    src = cuda.kernel_source()
    declared = set(re.findall(r'extern "C" __global__ void (\w+)\(', src))
    assert set(cuda.KERNELS) == declared
    assert f"#define ROW_TILE {cuda.ROW_TILE}" in src
    assert f"#define GRAM_TILE {cuda.GRAM_TILE}" in src
    assert f"#define REDUCE_THREADS {cuda.REDUCE_THREADS}" in src


@pytest.mark.skipif(bool(USABLE), reason="a GPU is present")
def test_without_a_runtime_or_gpu_the_message_says_what_to_do():
    with pytest.raises(BackendUnavailableError, match=r"pycuda|CuPy|CUDA"):
        cuda.CudaPostprocessor()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("rt", USABLE)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("h,w,band_rows", [(181, 243, None), (97, 531, 40), (7, 300, None)])
def test_gpu_matches_cpu_exact_mode(rt, dtype, h, w, band_rows):
    image, feats = structured_scene(h, w, seed=6)
    feats = feats.astype(dtype)
    exact = feats.astype(np.float32)  # the same values on both sides
    ref, ref_basis = postprocess(exact, image)
    pp = cuda.CudaPostprocessor(runtime=rt, band_rows=band_rows)
    embedding, basis, kept = pp.run(feats, image, keep_features=True)
    np.testing.assert_allclose(basis.components, ref_basis.components, atol=1e-5)
    assert np.abs(embedding - ref).max() <= TOL
    np.testing.assert_array_equal(kept, exact)
    filtered = np.moveaxis(pp.filter_channels(exact, image), 0, -1)
    ref_filtered = filter_channels(exact, image, PostprocessConfig())
    assert np.abs(filtered - ref_filtered).max() <= 1e-4 * np.abs(ref_filtered).max()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("rt", USABLE)
def test_gpu_takes_device_arrays_and_refuses_strided_ones(rt):
    image, feats = structured_scene(64, 96, seed=7)
    pp = cuda.CudaPostprocessor(runtime=rt)
    with rt.activate():
        stream = rt.stream()
        on_device = rt.upload(feats, stream)
        channels_last = rt.upload(np.ascontiguousarray(np.moveaxis(feats, 0, -1)), stream)
    host = pp.run(feats, image)[0]
    for given in (on_device, on_device.native):  # ours, and the library's own array
        np.testing.assert_array_equal(pp.run(given, image)[0], host)
    with pytest.raises(ValueError, match="C-contiguous"):
        pp.run(channels_last.native.transpose((2, 0, 1)), image)


@pytest.mark.gpu
@gpu
def test_gpu_takes_torch_cuda_tensors():
    """A PyTorch CUDA tensor (``__cuda_array_interface__``) is read in place."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or os.environ.get("SSS_RT_REHEARSE") == "1":
        pytest.skip("needs PyTorch on a CUDA GPU")
    image, feats = structured_scene(64, 96, seed=8)
    pp = cuda.CudaPostprocessor()
    tensor = torch.from_numpy(feats).cuda()
    torch.cuda.synchronize()
    np.testing.assert_array_equal(pp.run(tensor, image)[0], pp.run(feats, image)[0])


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
