"""GPU post-processing: the CUDA kernels of ``kernels/guided_filter.cu`` on a CUDA runtime.

The exact mode's rules and results (``sss_rt.postprocess.exact``): its two passes are written
once (:func:`~sss_rt.postprocess.exact.two_passes`); :class:`CudaEngine` is this device's part —
over device bands (:meth:`~sss_rt.bands.FeatureSource.device_band`), every channel of a band
guided-filtered against the band's own guide statistics and its float64 covariance about the
first band's channel means accumulated on the device; after the eigendecomposition on the host,
the raw features projected on the basis (float64 kernel) and those k channels filtered, then
normalized to [0, 1] on the device.

A band carries a halo of 2r rows on each side, so the result equals the whole-image filter; an
image whose buffers fit in the free GPU memory (``memory_fraction`` of it) is one band. Only the
H×W×k result (and the raw features, when asked) come back to the host. Every launch is on one
stream, the caller's (``stream=``) or the post-processor's own (one for its life, so a caching
allocator producing the bands on it keeps one cache), which waits on a source's ``ready`` event
before reading it; host copies are asynchronous with one synchronize where the host needs the
values.

The runtime (:mod:`sss_rt.cuda`) is pycuda or CuPy, chosen by :func:`sss_rt.cuda.cuda_runtime`,
or one given (the test suite runs these kernels on the CPU through its stand-ins of both:
tests/cuda_emulator.py). Each call makes the device current on the calling thread for its
duration, so one post-processor serves any thread; calls are serialized (one stream).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from sss_rt.bands import DeviceArraySource, DeviceBand, FeatureSource, as_source
from sss_rt.cuda import DeviceArray, cuda_runtime
from sss_rt.device import Device
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.exact import bands, two_passes
from sss_rt.postprocess.pca import PCABasis
from sss_rt.timing import timed

ROW_TILE = 256  # must match kernels/guided_filter.cu
GRAM_TILE = 16
REDUCE_THREADS = 256
DEFAULT_SHARED = 48 << 10  #: dynamic shared memory a kernel gets without opting in
MAX_GRID_Y = 65535
MAX_COMPONENTS = 4  #: the project kernel's accumulators


def device_index(device: str | Device) -> int:
    """``"cuda"`` → 0, ``"cuda:N"`` → N."""
    parsed = Device.parse(device)
    if parsed.kind == "cpu":
        raise ValueError(f"not a CUDA device: {device!r} (use cuda or cuda:N)")
    return parsed.cuda_index


def kernel_source() -> str:
    return (resources.files("sss_rt.kernels") / "guided_filter.cu").read_text()


@dataclass
class _Guide:
    """A band's guide statistics on the device: I ([9][n][W], its first 3 planes the guide),
    window means ([3][n][W]) and (Σ + εU)⁻¹ ([6][n][W])."""

    planes: Any
    mean: Any
    inv: Any
    rows: tuple[int, int]
    height: int  #: the image's


class _FilterBuffers:
    """The filter's two [chunk][4][n][W] float32 work buffers, reused while bands keep their
    size (a buffer for more channels serves fewer: the kernels index by the band's n·W)."""

    def __init__(self, runtime: Any, chunk: int):
        self.runtime, self.chunk = runtime, chunk
        self.pair: tuple[Any, Any] | None = None

    def get(self, channels: int, n_rows: int, w: int) -> tuple[Any, Any]:
        chunk = min(self.chunk, channels)
        held = self.pair
        if held is None or held[0].shape[0] < chunk or held[0].shape[2:] != (n_rows, w):
            self.pair = held = None  # the old pair is freed before the new one is allocated
            shape = (chunk, 4, n_rows, w)
            held = (self.runtime.empty(shape, np.float32), self.runtime.empty(shape, np.float32))
            self.pair = held
        return held


class CudaPostprocessor:
    """Exact post-processing on the GPU (see the module's doc).

    ``device``: ``"cuda"`` or ``"cuda:N"``; ``runtime``: a :mod:`sss_rt.cuda` runtime (default:
    :func:`~sss_rt.cuda.cuda_runtime` of that device). ``chunk``: channels filtered at once;
    ``band_rows``: rows per band (default: as many as ``memory_fraction`` of the free GPU
    memory holds).
    """

    def __init__(
        self,
        config: PostprocessConfig | None = None,
        *,
        device: str | Device = "cuda",
        runtime: Any = None,
        chunk: int = 16,
        band_rows: int | None = None,
        memory_fraction: float = 0.5,
    ):
        self.config = config or PostprocessConfig()
        if self.config.mode != "exact":
            raise ValueError("the GPU post-processing implements the exact mode")
        self.runtime = runtime if runtime is not None else cuda_runtime(device_index(device))
        self.chunk = chunk
        self.band_rows = band_rows
        self.memory_fraction = memory_fraction
        self._lock = threading.Lock()
        with self.runtime.activate():
            module = self.runtime.compile(kernel_source())
            self.f = {name: module.function(name) for name in KERNELS}
            self._stream = self.runtime.stream()
        shared = self._products_shared()
        if shared > DEFAULT_SHARED:  # large radii: opt in to more dynamic shared memory
            if shared > self.runtime.max_shared_optin:
                largest = (self.runtime.max_shared_optin // 16 - ROW_TILE) // 2
                raise ValueError(
                    f"radius {self.config.radius} needs {shared} bytes of shared memory per "
                    f"block; this GPU allows {self.runtime.max_shared_optin} (radius ≤ {largest})"
                )
            with self.runtime.activate():
                for name in ("box_rows_products_f32", "box_rows_products_f16", "box_rows"):
                    self.f[name].allow_shared(shared)

    def _products_shared(self) -> int:
        return 4 * (ROW_TILE + 2 * self.config.radius) * 4

    # -- pieces ----------------------------------------------------------------------------
    def _guide(self, image: np.ndarray, b0: int, b1: int, stream: Any) -> _Guide:
        g, r, h = self.runtime, self.config.radius, image.shape[0]
        n_rows, w = b1 - b0, image.shape[1]
        i32 = np.int32
        rgb = g.upload(np.ascontiguousarray(image[b0:b1]), stream)
        planes = g.empty((9, n_rows, w), np.float32)
        tmp = g.empty((9, n_rows, w), np.float32)
        sums = g.empty((9, n_rows, w), np.float32)
        flat = (_blocks(n_rows * w, 256, 1 << 16), 1)
        self.f["guide_planes"](
            rgb, planes, i32(n_rows), i32(w),
            block=(256, 1, 1), grid=flat, stream=stream,
        )  # fmt: skip
        self._box(planes, tmp, sums, 9, n_rows, w, stream)
        mean = g.empty((3, n_rows, w), np.float32)
        inv = g.empty((6, n_rows, w), np.float32)
        self.f["guide_inverse"](
            sums, mean, inv, i32(n_rows), i32(w), i32(r),
            np.float32(self.config.eps), i32(b0), i32(h),
            block=(256, 1, 1), grid=flat, stream=stream,
        )  # fmt: skip
        return _Guide(planes, mean, inv, (b0, b1), h)

    def _box(self, src: Any, tmp: Any, dst: Any, planes: int, n_rows: int, w: int, stream) -> None:
        """dst = box sums of ``planes`` planes of src (n_rows×w each), through tmp."""
        i32, r = np.int32, self.config.radius
        self.f["box_rows"](
            src, tmp, i32(n_rows), i32(w), i32(r),
            block=(ROW_TILE, 1, 1), grid=(_blocks(w, ROW_TILE), n_rows, planes),
            shared=(ROW_TILE + 2 * r) * 4, stream=stream,
        )  # fmt: skip
        self.f["box_cols"](
            tmp, dst, i32(n_rows), i32(w), i32(r),
            block=(128, 1, 1), grid=(_blocks(w, 128), planes), stream=stream,
        )  # fmt: skip

    def _filter(self, band: DeviceBand, guide: _Guide, out: Any, scratch: tuple, stream) -> None:
        """out ([C][n][W] float32) = the guided filter of every channel of ``band``."""
        c_total, n_rows, w = band.shape
        r, (b0, _), h = self.config.radius, guide.rows, guide.height
        i32 = np.int32
        buf_a, buf_b = scratch
        suffix = "f16" if band.dtype == np.float16 else "f32"
        for c0 in range(0, c_total, self.chunk):
            n = min(self.chunk, c_total - c0)
            self.f[f"box_rows_products_{suffix}"](
                np.uintp(band.pointer), guide.planes, buf_a, i32(c0),
                i32(n_rows), i32(w), i32(r), np.int64(band.stride),
                block=(ROW_TILE, 1, 1), grid=(_blocks(w, ROW_TILE), n_rows, n),
                shared=self._products_shared(), stream=stream,
            )  # fmt: skip
            self.f["box_cols"](
                buf_a, buf_b, i32(n_rows), i32(w), i32(r),
                block=(128, 1, 1), grid=(_blocks(w, 128), 4 * n), stream=stream,
            )  # fmt: skip
            grid = (_blocks(n * n_rows * w, 256, 1 << 16), 1)
            self.f["coefficients"](
                buf_b, guide.mean, guide.inv, i32(n), i32(n_rows),
                i32(w), i32(r), i32(b0), i32(h), block=(256, 1, 1), grid=grid, stream=stream,
            )  # fmt: skip
            self._box(buf_b, buf_a, buf_b, 4 * n, n_rows, w, stream)
            self.f["apply_output"](
                buf_b, guide.planes, out, i32(c0), i32(n),
                i32(n_rows), i32(w), i32(r), i32(b0), i32(h),
                block=(256, 1, 1), grid=grid, stream=stream,
            )  # fmt: skip

    def _channel_sums(self, pointer: int, dtype: Any, c: int, count: int, ld: int, stream) -> Any:
        blocks = min(1024, _blocks(count, REDUCE_THREADS))
        partial = self.runtime.empty((blocks, c), np.float64)
        suffix = "f16" if np.dtype(dtype) == np.float16 else "f32"
        self.f[f"channel_sums_{suffix}"](
            np.uintp(pointer), partial, np.int32(c), np.int64(count), np.int64(ld),
            block=(REDUCE_THREADS, 1, 1), grid=(blocks, c), stream=stream,
        )  # fmt: skip
        return partial

    def _rows_per_band(self, c: int, h: int, w: int, itemsize: int, uploads: bool) -> int:
        if self.band_rows is not None:
            return max(1, min(h, self.band_rows, self._max_rows()))
        k, chunk = self.config.n_components, min(self.chunk, c)
        per_row = w * (c * 4 + 2 * chunk * 16 + 36 * 4 + 8 * k + (c * itemsize if uploads else 0))
        fixed = h * w * k * 12  # the projected planes, their filter and the output
        free = self.runtime.free_memory() * self.memory_fraction - fixed
        rows = int(free // max(per_row, 1))
        if rows >= h:
            return min(h, self._max_rows())
        return max(8 * self.config.radius, 16, min(rows, self._max_rows()))

    def _max_rows(self) -> int:
        """Output rows per band such that the band with its two 2r halos launches: a band's
        rows are grid.y of the row kernels, at most 65,535."""
        return max(1, MAX_GRID_Y - 4 * self.config.radius)

    # -- the whole post-processing -----------------------------------------------------------
    def run(
        self,
        features: FeatureSource | np.ndarray | Any,
        image: np.ndarray,
        *,
        stream: Any = None,
        keep_features: bool = False,
        timings: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, PCABasis, np.ndarray | None]:
        """Post-process C×H×W ``features`` with the image as guide.

        Parameters
        ----------
        features : FeatureSource, ndarray or device array
            C×H×W float32 or float16: a source, a host array, a :class:`~sss_rt.cuda.DeviceArray`
            or any C-contiguous array with ``__cuda_array_interface__`` (CuPy, PyTorch, pycuda)
            on this device.
        image : ndarray
            H×W×3 uint8 RGB, the guide.
        stream : runtime stream, optional
            Where to launch (default: the post-processor's own).
        keep_features : bool
            Also return the raw features, C×H×W float32 on the host.

        Returns
        -------
        embedding : ndarray
            H×W×k float32 in [0, 1].
        basis : PCABasis
        features : ndarray or None
        """
        with self._lock, self.runtime.activate():
            source = self._source(features)
            engine = CudaEngine(self, image, stream or self._stream, keep_features, timings)
            embedding, basis, _ = two_passes(engine, source, self.config, timings)
            return embedding, basis, engine.kept

    def filter_channels(self, features: Any, image: np.ndarray, stream: Any = None) -> np.ndarray:
        """The guided filter of every channel (C×H×W float32, host), the whole image as one
        band: for tests and for callers that want the filtered channels themselves."""
        with self._lock, self.runtime.activate():
            source = self._source(features)
            c, h, w = source.shape
            stream = stream if stream is not None else self._stream
            band = self._check(source.device_band(0, h, self.runtime, stream), c, h, w)
            guide = self._guide(image, 0, h, stream)
            out = self.runtime.empty((c, h, w), np.float32)
            scratch = _FilterBuffers(self.runtime, self.chunk).get(c, h, w)
            self._filter(band, guide, out, scratch, stream)
            host = self.runtime.download(out, stream)
            stream.synchronize()
            return np.array(host)

    __call__ = run

    def _source(self, features: Any) -> FeatureSource:
        """Any accepted form of features as a source (called with the device current)."""
        if isinstance(features, np.ndarray) and features.dtype == np.float16:
            if features.ndim != 3:
                raise ValueError(f"features must be C×H×W, got shape {features.shape}")
            features = self.runtime.upload(np.ascontiguousarray(features), self._stream)
        if isinstance(features, FeatureSource | np.ndarray):
            return as_source(features)
        if isinstance(features, DeviceArray):
            if len(features.shape) != 3:
                raise ValueError(f"device features must be C×H×W, got shape {features.shape}")
            return DeviceArraySource(
                features.ptr, features.shape, features.dtype, self.runtime, owner=features
            )
        interface = getattr(features, "__cuda_array_interface__", None)
        if interface is not None:  # CuPy, PyTorch, pycuda, Numba arrays
            shape, dtype = tuple(interface["shape"]), np.dtype(interface["typestr"])
            if len(shape) != 3:
                raise ValueError(f"device features must be C×H×W, got shape {shape}")
            contiguous = tuple(dtype.itemsize * int(np.prod(shape[i + 1 :])) for i in range(3))
            strides = interface.get("strides")
            if strides is not None and tuple(strides) != contiguous:
                raise ValueError(
                    "device features must be C-contiguous C×H×W (this array is strided, e.g. "
                    "a transposed view: pass a contiguous copy)"
                )
            pointer = int(interface["data"][0])
            return DeviceArraySource(pointer, shape, dtype, self.runtime, owner=features)
        raise TypeError(
            f"features must be a source, an array or a CUDA device array, not {type(features)}"
        )

    @staticmethod
    def _check(band: DeviceBand, c: int, n_rows: int, w: int) -> DeviceBand:
        if tuple(band.shape) != (c, n_rows, w):
            raise ValueError(f"a device band is {band.shape}, expected {(c, n_rows, w)}")
        if np.dtype(band.dtype) not in (np.float32, np.float16):
            raise ValueError(f"device features must be float32 or float16, got {band.dtype}")
        return band


@dataclass
class _FilteredBand:
    band: DeviceBand  #: the raw features, rows b0:b1
    filtered: Any  #: C×n×W float32, the filter of rows y0:y1 at (y0 − b0)·W
    inner: int  #: offset of row y0 in the band, in pixels
    count: int  #: output pixels


class CudaEngine:
    """The exact mode's GPU engine (:func:`sss_rt.postprocess.exact.two_passes` drives it):
    device bands, the kernels' filter, float64 partial sums on the device (copied back at the
    end of the pass, one wait), the float64 projection kernel, min/max and normalization on the
    device. Runs inside its post-processor's lock with the device current."""

    def __init__(
        self,
        pp: CudaPostprocessor,
        image: np.ndarray,
        stream: Any,
        keep_features: bool,
        timings: dict[str, float] | None,
    ):
        self.pp, self.rt, self.f = pp, pp.runtime, pp.f
        self.image, self.stream, self.keep, self.timings = image, stream, keep_features, timings
        self.kept: np.ndarray | None = None
        self.guide: _Guide | None = None
        self.filtered: Any = None
        self.projected: Any = None

    def plan(self, source: FeatureSource) -> tuple[FeatureSource, list, list]:
        c, h, w = self.shape = source.shape
        if self.image.shape != (h, w, 3) or self.image.dtype != np.uint8:
            raise ValueError(
                f"image must be {h}×{w}×3 uint8 RGB, got {self.image.shape} {self.image.dtype}"
            )
        if self.pp.config.n_components > MAX_COMPONENTS:
            raise ValueError(f"the GPU path keeps at most {MAX_COMPONENTS} components")
        itemsize = 2 if getattr(source, "dtype", None) == np.float16 else 4
        rows = self.pp._rows_per_band(c, h, w, itemsize, uploads=not source.on_device)
        plan = list(bands(h, rows, 2 * self.pp.config.radius))
        self.single = len(plan) == 1
        self.buffers = _FilterBuffers(self.rt, self.pp.chunk)
        if self.keep:
            self.kept = self.rt.pinned((c, h, w), np.float32)
        return source, plan, plan

    def _band(self, source: FeatureSource, b0: int, b1: int) -> DeviceBand:
        c, _, w = self.shape
        with timed(self.timings, "network"):
            band = source.device_band(b0, b1, self.rt, self.stream)
            return self.pp._check(band, c, b1 - b0, w)

    def filter_band(
        self, source: FeatureSource, y0: int, y1: int, b0: int, b1: int
    ) -> _FilteredBand:
        c, _, w = self.shape
        band = self._band(source, b0, b1)
        n_rows = b1 - b0
        with timed(self.timings, "guided_filter"):
            self.guide = self.pp._guide(self.image, b0, b1, self.stream)
            if self.filtered is None or self.filtered.shape[1] != n_rows:
                self.filtered = None
                self.filtered = self.rt.empty((c, n_rows, w), np.float32)
            scratch = self.buffers.get(c, n_rows, w)
            self.pp._filter(band, self.guide, self.filtered, scratch, self.stream)
        if self.kept is not None:
            self.kept[:, y0:y1] = band.to_host(self.rt, y0 - b0, y1 - b0, self.stream)
        return _FilteredBand(band, self.filtered, (y0 - b0) * w, (y1 - y0) * w)

    def shift(self, fb: _FilteredBand) -> np.ndarray:
        """The first band's channel means (of the raw features, float32 as on the device)."""
        c = self.shape[0]
        band = fb.band
        start = band.pointer + fb.inner * band.dtype.itemsize
        sums = self.pp._channel_sums(start, band.dtype, c, fb.count, band.stride, self.stream)
        first = self.rt.download(sums, self.stream)
        self.stream.synchronize()  # the shift is needed before the covariance
        shift32 = (first.sum(axis=0) / fb.count).astype(np.float32)
        self.shift_gpu = self.rt.upload(shift32, self.stream)
        return shift32.astype(np.float64)

    def moments(self, fb: _FilteredBand, shift: np.ndarray) -> tuple[Any, Any, int]:
        c, _, w = self.shape
        n_rows = fb.filtered.shape[1]
        nz = min(1024, _blocks(fb.count, 1 << 15))
        per_block = -(-fb.count // nz)
        gram = self.rt.empty((nz, c, c), np.float64)
        start = fb.filtered.ptr + fb.inner * 4
        self.f["gram_partial"](
            np.uintp(start), self.shift_gpu, gram, np.int32(c), np.int64(fb.count),
            np.int64(n_rows * w), np.int64(per_block), block=(GRAM_TILE, GRAM_TILE, 1),
            grid=(_blocks(c, GRAM_TILE), _blocks(c, GRAM_TILE), nz), stream=self.stream,
        )  # fmt: skip
        total = self.pp._channel_sums(start, np.float32, c, fb.count, n_rows * w, self.stream)
        return total, gram, fb.count

    def resolve(
        self, handles: list[Any], shift: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
        host = [(self.rt.download(t, self.stream), self.rt.download(m, self.stream), n)
                for t, m, n in handles]  # fmt: skip
        self.stream.synchronize()
        self.filtered = None  # pass 1's buffer, no longer needed
        # the device's channel sums are raw; the Grams are about the shift already
        return [(t.sum(axis=0) - n * shift, m.sum(axis=0), n) for t, m, n in host]

    def project(
        self, source: FeatureSource, rows: tuple[int, int, int, int], comps: np.ndarray,
        shift: np.ndarray,
    ) -> None:  # fmt: skip
        y0, y1, b0, b1 = rows
        c, h, w = self.shape
        k, n_rows = comps.shape[0], b1 - b0
        if self.projected is None:
            self.comps = self.rt.upload(np.ascontiguousarray(comps), self.stream)
            self.shift_dev = self.rt.upload(np.asarray(shift, np.float64), self.stream)
            self.projected = self.rt.empty((k, h, w), np.float32)
        band = self._band(source, b0, b1)
        with timed(self.timings, "guided_filter"):
            if not self.single or self.guide is None:
                self.guide = self.pp._guide(self.image, b0, b1, self.stream)
            proj = self.rt.empty((k, n_rows, w), np.float32)
            suffix = "f16" if band.dtype == np.float16 else "f32"
            self.f[f"project_{suffix}"](
                np.uintp(band.pointer), self.comps, self.shift_dev, proj,
                np.int32(c), np.int32(k), np.int64(n_rows * w), np.int64(band.stride),
                block=(256, 1, 1), grid=(_blocks(n_rows * w, 256, 1 << 16), 1),
                stream=self.stream,
            )  # fmt: skip
            target = self.projected if self.single else self.rt.empty((k, n_rows, w), np.float32)
            proj_band = DeviceBand(proj.ptr, (k, n_rows, w), np.dtype(np.float32))
            scratch = self.buffers.get(k, n_rows, w)
            self.pp._filter(proj_band, self.guide, target, scratch, self.stream)
            if not self.single:
                row_bytes = w * 4
                for j in range(k):
                    self.rt.copy_device(
                        self.projected.ptr + (j * h + y0) * row_bytes,
                        target.ptr + (j * n_rows + y0 - b0) * row_bytes,
                        (y1 - y0) * row_bytes,
                        self.stream,
                    )

    def normalize(self, offset: np.ndarray, flat: np.ndarray) -> np.ndarray:
        rt, stream = self.rt, self.stream
        k, h, w = self.projected.shape
        n = h * w
        offset_dev = rt.upload(np.asarray(offset, np.float32), stream)
        blocks = min(1024, _blocks(n, REDUCE_THREADS))
        mm = rt.empty((blocks, k, 2), np.float32)
        self.f["minmax_partial"](
            self.projected, offset_dev, mm, np.int32(k), np.int64(n),
            block=(REDUCE_THREADS, 1, 1), grid=(blocks, k), stream=stream,
        )  # fmt: skip
        mm_host = rt.download(mm, stream)
        stream.synchronize()
        lo, hi = mm_host[..., 0].min(axis=0), mm_host[..., 1].max(axis=0)
        span = (hi - lo).astype(np.float32)
        span[(span <= 0) | flat] = 0.0
        lo_dev = rt.upload(lo.astype(np.float32), stream)
        span_dev = rt.upload(span, stream)
        out = rt.empty((n, k), np.float32)
        self.f["normalize"](
            self.projected, offset_dev, lo_dev, span_dev, out, np.int32(k), np.int64(n),
            block=(256, 1, 1), grid=(_blocks(n, 256, 1 << 16), 1), stream=stream,
        )  # fmt: skip
        embedding = rt.download(out, stream)
        stream.synchronize()  # the embedding and any kept features are on the host now
        return np.array(embedding.reshape(h, w, k))


def _blocks(n: int, threads: int, cap: int = 65535) -> int:
    return max(1, min(cap, -(-n // threads)))


#: every kernel of kernels/guided_filter.cu, each launched by this module
KERNELS = (
    "guide_planes",
    "box_rows",
    "box_rows_products_f32",
    "box_rows_products_f16",
    "box_cols",
    "guide_inverse",
    "coefficients",
    "apply_output",
    "channel_sums_f32",
    "channel_sums_f16",
    "gram_partial",
    "project_f32",
    "project_f16",
    "minmax_partial",
    "normalize",
)
