"""The CUDA post-processing, kernels and launcher, executed on the CPU (tests/cuda_emulator.py).

The same ``kernels/guided_filter.cu`` a GPU compiles is compiled here against the project's
CUDA emulation and driven by the real ``CudaPostprocessor`` through each real runtime class
(pycuda's and CuPy's, over the emulator's stand-ins of both libraries); results are compared
with the CPU exact mode. Tolerances: embedding 2e-4 absolute (values in [0, 1]; float32
kernels vs the compiled CPU filter), filtered channels 1e-4 of their scale, basis 1e-5.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import structured_scene
from cuda_emulator import Emulator, LaunchError

from sss_rt.bands import DeviceArraySource
from sss_rt.postprocess import cuda, postprocess
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import filter_channels

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs a C++ compiler")
TOL = 2e-4


@pytest.fixture(scope="module")
def emu() -> Emulator:
    return Emulator()


@pytest.fixture(scope="module", params=["pycuda", "cupy"])
def rt(request, emu):
    """The project's runtime class for each library, on the emulator."""
    return emu.runtime(request.param)


def _scene(h: int, w: int, c: int, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    image, feats = structured_scene(h, w, seed=seed)
    return image, np.ascontiguousarray(feats[:c])


def _check(rt, h: int, w: int, c: int, dtype, band_rows=None) -> None:
    image, feats = _scene(h, w, c)
    feats = feats.astype(dtype)
    exact = feats.astype(np.float32)  # the same values on both sides
    ref, ref_basis = postprocess(exact, image)
    pp = cuda.CudaPostprocessor(runtime=rt, band_rows=band_rows)
    embedding, basis, kept = pp.run(feats, image, keep_features=True)
    assert embedding.shape == ref.shape and embedding.dtype == np.float32
    assert np.abs(embedding - ref).max() <= TOL
    assert embedding.min() >= 0.0 and embedding.max() <= 1.0
    np.testing.assert_allclose(basis.components, ref_basis.components, atol=1e-5)
    np.testing.assert_array_equal(kept, exact)


SMALL = [(1, 1), (7, 300), (97, 131), (192, 256)]


@pytest.mark.parametrize("h,w", SMALL)
@pytest.mark.parametrize("c", [1, 3, 11])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_matches_cpu_exact_mode(rt, h, w, c, dtype):
    _check(rt, h, w, c, dtype)


@pytest.mark.parametrize("h,w,dtype", [(97, 131, np.float32), (192, 256, np.float16)])
def test_128_channels_match_cpu_exact_mode(rt, h, w, dtype):
    _check(rt, h, w, 128, dtype)


@pytest.mark.parametrize(
    "h,w,c,rows", [(97, 131, 128, 23), (192, 256, 11, 40), (7, 300, 3, 1), (192, 256, 3, 191)]
)
def test_bands_match_the_whole_image(rt, h, w, c, rows):
    """Bands of a few rows with their 2r halos (1-row bands; a last band of one row)."""
    _check(rt, h, w, c, np.float32, band_rows=rows)


@pytest.mark.parametrize("h,w", [(7, 300), (97, 531)])
def test_filtered_channels_match_the_cpu_filter(rt, h, w):
    """Wider than one 256-column tile: the tiles' halo reads are exercised."""
    image, feats = _scene(h, w, 11)
    got = cuda.CudaPostprocessor(runtime=rt).filter_channels(feats, image)
    ref = np.moveaxis(filter_channels(feats, image, PostprocessConfig()), -1, 0)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("kind", ["pycuda", "cupy"])
def test_every_kernel_is_launched(kind):
    emu = Emulator()
    for dtype in (np.float32, np.float16):
        _check(emu.runtime(kind), 20, 300, 5, dtype)
    assert set(emu.launches) == set(cuda.KERNELS)


def test_large_radius_opts_in_to_more_shared_memory(rt):
    image, feats = _scene(9, 40, 3)
    cfg = PostprocessConfig(radius=1600)  # 4·(256 + 3200)·4 bytes > 48 KB
    ref, _ = postprocess(feats, image, cfg)
    got, _, _ = cuda.CudaPostprocessor(cfg, runtime=rt).run(feats, image)
    assert np.abs(got - ref).max() <= TOL
    with pytest.raises(ValueError, match="shared memory"):
        cuda.CudaPostprocessor(PostprocessConfig(radius=8000), runtime=rt)


def test_device_arrays_and_pointers(rt):
    """A runtime DeviceArray, the library's own array (``__cuda_array_interface__``) and a
    pointer source with a producer's event give the host input's result."""
    image, feats = _scene(31, 45, 7)
    pp = cuda.CudaPostprocessor(runtime=rt)
    host, _, _ = pp.run(feats, image)
    with rt.activate():
        producer = rt.stream()
        on_device = rt.upload(feats, producer)
        ready = rt.record(producer)
        strided = rt.upload(np.ascontiguousarray(feats.T), producer).native.T
    for given in (on_device, on_device.native):
        np.testing.assert_array_equal(pp.run(given, image)[0], host)
    source = DeviceArraySource(on_device.ptr, feats.shape, np.float32, rt, ready=ready)
    with rt.activate():
        stream = rt.stream()
    from_pointer, _, _ = pp.run(source, image, stream=stream)
    np.testing.assert_array_equal(from_pointer, host)
    assert ready in stream.native.waited  # the producer's event orders the reads
    with pytest.raises(ValueError, match="C-contiguous"):
        pp.run(strided, image)


# -- the emulator itself -----------------------------------------------------------------------
PROBES = r"""
#include <cuda_fp16.h>
#define N 64
extern "C" __global__ void reverse(const float *in, float *out)
{
    __shared__ float s[N];
    s[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = s[N - 1 - threadIdx.x];
}
extern "C" __global__ void divergent(float *out)
{
    if (threadIdx.x < 8)
        return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
extern "C" __global__ void overrun(float *out, int n)
{
    DYNAMIC_SHARED(float, s);
    s[threadIdx.x + n] = 1.0f;
    out[threadIdx.x] = s[0];
}
extern "C" __global__ void write_past(float *out, int n) { out[n + threadIdx.x] = 0.0f; }
extern "C" __global__ void widen(const __half *in, float *out, long long n)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = __half2float(in[i]);
}
"""


@pytest.fixture
def probes(emu):
    with emu.context():  # the pycuda face: a context on this thread for every call
        yield emu.pycuda.compiler.SourceModule(PROBES, no_extern_c=True)


def test_syncthreads_is_a_barrier(emu, probes):
    x = emu.pycuda.gpuarray.to_gpu(np.arange(64, dtype=np.float32))
    out = emu.pycuda.gpuarray.empty(64, np.float32)
    probes.get_function("reverse")(x.gpudata, out.gpudata, block=(64, 1, 1), grid=(3, 1))
    np.testing.assert_array_equal(out.get(), np.arange(64, dtype=np.float32)[::-1])


def test_divergent_barrier_shared_overrun_and_buffer_overrun_fail(emu, probes):
    out = emu.pycuda.gpuarray.empty(64, np.float32)
    with pytest.raises(LaunchError, match="divergent __syncthreads"):
        probes.get_function("divergent")(out.gpudata, block=(64, 1, 1))
    with pytest.raises(LaunchError, match="dynamic shared memory"):
        probes.get_function("overrun")(out.gpudata, np.int32(1), block=(64, 1, 1), shared=256)
    probes.get_function("overrun")(out.gpudata, np.int32(0), block=(64, 1, 1), shared=256)
    with pytest.raises(LaunchError, match="wrote past the end"):
        probes.get_function("write_past")(out.gpudata, np.int32(1), block=(64, 1, 1))


def test_arguments_are_checked_against_the_signature(emu, probes):
    f = probes.get_function("write_past")
    g = emu.pycuda.gpuarray
    out = g.empty(64, np.float32)
    with pytest.raises(LaunchError, match="takes int"):
        f(out.gpudata, 0, block=(1, 1, 1))  # a Python int for int
    with pytest.raises(LaunchError, match="takes int"):
        f(out.gpudata, np.int64(0), block=(1, 1, 1))
    with pytest.raises(LaunchError, match="holds float64"):
        f(g.empty(64, np.float64).gpudata, np.int32(0), block=(1, 1, 1))
    with pytest.raises(LaunchError, match="pointer argument"):
        f(int(out.gpudata), np.int32(0), block=(1, 1, 1))  # a Python int for a pointer
    with pytest.raises(LaunchError, match="takes long long"):
        half = g.empty(64, np.float16)
        probes.get_function("widen")(half.gpudata, out.gpudata, np.int32(1), block=(1, 1, 1))
    with pytest.raises(LaunchError, match="shared memory exceed"):
        f(out.gpudata, np.int32(0), block=(1, 1, 1), shared=64 << 10)
    with pytest.raises(LaunchError, match="block"):
        f(out.gpudata, np.int32(0), block=(2048, 1, 1))
    with pytest.raises(LaunchError, match="arguments"):
        f(out.gpudata, block=(1, 1, 1))


def test_half_conversion_matches_ieee(emu, probes):
    bits = np.arange(1 << 16, dtype=np.uint16)
    halves = bits.view(np.float16)
    src = emu.pycuda.gpuarray.to_gpu(halves)
    out = emu.pycuda.gpuarray.empty(halves.shape, np.float32)
    n = np.int64(halves.size)
    probes.get_function("widen")(src.gpudata, out.gpudata, n, block=(256, 1, 1), grid=(64, 1))
    got, want = out.get(), halves.astype(np.float32)
    finite = ~np.isnan(want)
    np.testing.assert_array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32))
    assert np.isnan(got[~finite]).all()


def test_a_planted_halo_fault_is_caught(monkeypatch):
    """An off-by-one in the row tile's halo (the left context starts one column late) must
    fail the parity check: the tests can see the faults they are there for."""
    source = cuda.kernel_source()
    planted = source.replace("const int x = x0 - r + i;", "const int x = x0 - r + 1 + i;")
    assert planted != source
    monkeypatch.setattr(cuda, "kernel_source", lambda: planted)
    image, feats = _scene(20, 300, 3)
    ref, _ = postprocess(feats, image)
    got, _, _ = cuda.CudaPostprocessor(runtime=Emulator().runtime()).run(feats, image)
    assert np.abs(got - ref).max() > 10 * TOL


# -- the pipeline: backend bands → CUDA post-processing ------------------------------------------
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_extractor_with_the_gpu_postprocessing_matches_the_cpu(rt, backend):
    """Extractor → backend's bands → device bands → CUDA post-processing (emulated), against
    the same Extractor's CPU post-processing, on a bundled photo."""
    if backend == "torch":
        pytest.importorskip("torch")
    from sss_rt import Extractor
    from sss_rt.extractor import examples_dir
    from sss_rt.postprocess import Postprocessor

    photo = sorted(examples_dir().glob("*.jpg"))[0]
    with Extractor(backend=backend, device="cpu", max_megapixels=0.05) as ex:
        assert ex.postprocessor.device == "cpu"
        cpu = ex.extract(photo, return_features=True)
        ex.postprocessor = Postprocessor(ex.config, "cuda", runtime=rt)
        assert ex.postprocessor.device == "cuda"
        gpu = ex.extract(photo, return_features=True)
    assert np.abs(gpu.embedding - cpu.embedding).max() <= 1e-3
    scale = np.abs(cpu.features).max()
    assert np.abs(gpu.features - cpu.features).max() <= 1e-5 * scale


def test_modes_without_a_gpu_implementation_run_on_the_cpu(rt, caplog):
    from sss_rt.postprocess import Postprocessor

    pp = Postprocessor(PostprocessConfig(mode="fast"), "cuda", runtime=rt)
    assert pp.device == "cpu" and "fast mode has no GPU implementation" in pp.reason
    image, feats = _scene(20, 30, 5)
    np.testing.assert_array_equal(
        pp(feats, image).embedding, postprocess(feats, image, PostprocessConfig(mode="fast"))[0]
    )


# -- contexts, threads, devices, streams, launch limits ------------------------------------------
@pytest.mark.parametrize("kind", ["pycuda", "cupy"])
def test_one_postprocessor_shared_by_threads_gives_the_serial_results(kind):
    """Four threads share one post-processor (as a service would); each call makes the device
    current on its own thread, and no thread ends with a context pushed."""
    from concurrent.futures import ThreadPoolExecutor

    emu = Emulator()
    pp = cuda.CudaPostprocessor(runtime=emu.runtime(kind))
    scenes = [_scene(23 + 4 * i, 41 + 3 * i, 5, seed=i) for i in range(4)]
    serial = [pp.run(f, im)[0] for im, f in scenes]

    def work(i: int) -> tuple[np.ndarray, list]:
        image, feats = scenes[i]
        out = pp.run(feats, image)[0]
        return out, list(emu._local.__dict__.get("contexts", []))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for (got, left), want in zip(results, serial, strict=True):
        np.testing.assert_array_equal(got, want)
        assert left == []  # popped: a worker thread never exits with a context pushed


def test_a_thread_without_a_context_is_refused_by_the_stand_in(emu):
    """The pycuda rule the runtime's activate() exists for, enforced by the stand-in."""
    with pytest.raises(LaunchError, match="invalid device context"):
        emu.pycuda.gpuarray.empty(4, np.float32)


@pytest.mark.parametrize("kind", ["pycuda", "cupy"])
def test_two_devices_in_two_threads(kind):
    """cuda:0 and cuda:1 post-processors running at once in two threads, each on its own
    device (its memory, its launches), equal their serial results; device memory of one GPU
    handed to the other's post-processor is refused."""
    from concurrent.futures import ThreadPoolExecutor

    emu = Emulator(devices=2)
    pps = [cuda.CudaPostprocessor(runtime=emu.runtime(kind, i)) for i in range(2)]
    scenes = [_scene(29, 37, 4, seed=1), _scene(31, 43, 6, seed=2)]
    serial = [pp.run(f, im)[0] for pp, (im, f) in zip(pps, scenes, strict=True)]
    with ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda i: pps[i].run(scenes[i][1], scenes[i][0])[0], range(2)))
    for got, want in zip(both, serial, strict=True):
        np.testing.assert_array_equal(got, want)
    rt1 = pps[1].runtime
    with rt1.activate():
        on_one = rt1.upload(scenes[0][1], rt1.stream())
    with pytest.raises(LaunchError, match="cuda:1"):
        pps[0].run(on_one, scenes[0][0])


def test_device_index_from_the_device_name(emu):
    assert cuda.device_index("cuda") == 0 and cuda.device_index("cuda:1") == 1
    with pytest.raises(ValueError, match="not a CUDA device"):
        cuda.device_index("cpu")


def test_one_stream_per_postprocessor(rt):
    """Every band of every run is asked for on the post-processor's one stream (a caching
    allocator producing bands on it keeps one cache, not one per image)."""
    from sss_rt.bands import ArraySource

    seen: list[int] = []

    class Recording(ArraySource):
        def device_band(self, y0, y1, runtime, stream):
            seen.append(stream.handle)
            return super().device_band(y0, y1, runtime, stream)

    pp = cuda.CudaPostprocessor(runtime=rt, band_rows=9)
    for seed in range(3):
        image, feats = _scene(30, 20, 3, seed=seed)
        pp.run(Recording(feats), image)
    assert len(seen) >= 3 * 2 * 2 and len(set(seen)) == 1


@pytest.mark.parametrize("band_rows", [None, 10_000])
def test_bands_with_their_halos_stay_within_grid_y(monkeypatch, band_rows):
    """A band's rows are the row kernels' grid.y: with its two 2r halos a band must still fit
    the GPU's limit (here lowered to 64 in the stand-in and the launcher alike)."""
    emu = Emulator(max_grid_y=64)
    monkeypatch.setattr(cuda, "MAX_GRID_Y", 64)
    cfg = PostprocessConfig(radius=5)
    image, feats = _scene(150, 20, 3)
    ref, _ = postprocess(feats, image, cfg)
    pp = cuda.CudaPostprocessor(cfg, runtime=emu.runtime(), band_rows=band_rows)
    got, _, _ = pp.run(feats, image)
    assert np.abs(got - ref).max() <= TOL
