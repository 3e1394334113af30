"""GPU post-processing: the CUDA kernels of ``kernels/guided_filter.cu`` driven by pycuda.

Same rules and results as the CPU exact mode (``sss_rt.postprocess.cpu``): every channel guided-
filtered, covariance in float64, the eigendecomposition on the host with the same sign rule,
the 3-d output from filtering the projected raw features, [0, 1] normalization.

Features may be a host array or already on the GPU (a pycuda ``GPUArray`` or a raw device
pointer, e.g. a TensorRT output binding), float32 or float16, C×H×W; they never go back to the
host. pycuda is imported on first use, through ``pycuda.autoprimaryctx`` so that the context
is the device's primary one, shared with TensorRT and PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from sss_rt.errors import BackendUnavailableError
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.moments import MomentAccumulator
from sss_rt.postprocess.pca import PCABasis

ROW_TILE = 256  # must match kernels/guided_filter.cu
GRAM_TILE = 16
REDUCE_THREADS = 256
_module_cache: dict[str, Any] = {}


def _pycuda() -> tuple[Any, Any, Any]:
    try:
        import pycuda.autoprimaryctx  # noqa: F401  (binds the primary context)
        import pycuda.driver as drv
        import pycuda.gpuarray as gpuarray
        from pycuda.compiler import SourceModule
    except ImportError as exc:
        raise BackendUnavailableError(
            f"GPU post-processing needs pycuda and a CUDA GPU ({exc}); "
            "pip install 'sss-rt[gpu]', or use the CPU post-processing"
        ) from None
    except Exception as exc:  # pycuda present, no driver or no GPU
        raise BackendUnavailableError(f"no usable CUDA GPU for pycuda: {exc}") from None
    return drv, gpuarray, SourceModule


def kernel_source() -> str:
    return (resources.files("sss_rt.kernels") / "guided_filter.cu").read_text()


def _module() -> Any:
    """The compiled kernels, once per process (pycuda also caches the binary on disk)."""
    if "module" not in _module_cache:
        _, _, source_module = _pycuda()
        _module_cache["module"] = source_module(
            kernel_source(), no_extern_c=True, options=["-O3", "-std=c++17"]
        )
    return _module_cache["module"]


@dataclass
class CudaResult:
    embedding: np.ndarray  #: H×W×k float32 in [0, 1] (host)
    basis: PCABasis
    filtered: Any = None  #: C×H×W float32 GPUArray of the filtered channels, when asked


def _ptr(x: Any) -> Any:
    if isinstance(x, int | np.integer):
        return np.uintp(int(x))
    return x.gpudata if hasattr(x, "gpudata") else x


def _blocks(n: int, threads: int, cap: int = 65535) -> int:
    return max(1, min(cap, -(-n // threads)))


class CudaPostprocessor:
    """Exact post-processing on the GPU (one stream; buffers reused across calls of one size)."""

    def __init__(self, config: PostprocessConfig | None = None, chunk: int = 16):
        self.config = config or PostprocessConfig()
        if self.config.mode != "exact":
            raise ValueError("the GPU post-processing implements the exact mode")
        self.chunk = chunk
        self.drv, self.gpuarray, _ = _pycuda()
        self.mod = _module()
        self.f = {name: self.mod.get_function(name) for name in _KERNELS}

    # -- the filter of a block of channels -------------------------------------------------
    def _filter(self, src, dtype, c_total, h, w, guide, mean, inv, out, stream) -> None:
        g, r = self.gpuarray, self.config.radius
        i32 = np.int32
        chunk = min(self.chunk, c_total)
        buf_a = g.empty((chunk, 4, h, w), np.float32)
        buf_b = g.empty((chunk, 4, h, w), np.float32)
        suffix = "f16" if dtype == np.float16 else "f32"
        rows_grid = (_blocks(w, ROW_TILE), h)
        for c0 in range(0, c_total, chunk):
            n = min(chunk, c_total - c0)
            self.f[f"box_rows_products_{suffix}"](
                _ptr(src), guide.gpudata, buf_a.gpudata, i32(c0), i32(h), i32(w), i32(r),
                block=(ROW_TILE, 1, 1), grid=(*rows_grid, n),
                shared=4 * (ROW_TILE + 2 * r) * 4, stream=stream,
            )  # fmt: skip
            self.f["box_cols"](
                buf_a.gpudata, buf_b.gpudata, i32(h), i32(w), i32(r),
                block=(128, 1, 1), grid=(_blocks(w, 128), 4 * n), stream=stream,
            )  # fmt: skip
            self.f["coefficients"](
                buf_b.gpudata, mean.gpudata, inv.gpudata, i32(n), i32(h), i32(w), i32(r),
                block=(256, 1, 1), grid=(_blocks(n * h * w, 256, 1 << 16), 1), stream=stream,
            )  # fmt: skip
            self.f["box_rows"](
                buf_b.gpudata, buf_a.gpudata, i32(h), i32(w), i32(r),
                block=(ROW_TILE, 1, 1), grid=(*rows_grid, 4 * n),
                shared=(ROW_TILE + 2 * r) * 4, stream=stream,
            )  # fmt: skip
            self.f["box_cols"](
                buf_a.gpudata, buf_b.gpudata, i32(h), i32(w), i32(r),
                block=(128, 1, 1), grid=(_blocks(w, 128), 4 * n), stream=stream,
            )  # fmt: skip
            self.f["apply_output"](
                buf_b.gpudata, guide.gpudata, out.gpudata, i32(c0), i32(n), i32(h), i32(w),
                i32(r), block=(256, 1, 1), grid=(_blocks(n * h * w, 256, 1 << 16), 1),
                stream=stream,
            )  # fmt: skip

    def _channel_sums(self, src, suffix, c, n, stream) -> np.ndarray:
        blocks = min(1024, _blocks(n, REDUCE_THREADS))
        partial = self.gpuarray.empty((blocks, c), np.float64)
        self.f[f"channel_sums_{suffix}"](
            _ptr(src), partial.gpudata, np.int32(c), np.int64(n),
            block=(REDUCE_THREADS, 1, 1), grid=(blocks, c), stream=stream,
        )  # fmt: skip
        return partial.get(stream=stream).sum(axis=0)

    def __call__(
        self,
        features: Any,
        image: np.ndarray,
        *,
        shape: tuple[int, int, int] | None = None,
        dtype: Any = None,
        stream: Any = None,
        return_filtered: bool = False,
    ) -> CudaResult:
        """Post-process C×H×W ``features`` (host array, GPUArray or device pointer) with the
        H×W×3 uint8 RGB ``image`` as guide. A device pointer needs ``shape`` and ``dtype``."""
        g, drv = self.gpuarray, self.drv
        cfg = self.config
        if isinstance(features, np.ndarray):
            if not np.isfinite(features).all():
                raise ValueError("features contain NaN or Inf; the model output is invalid")
            features = g.to_gpu(np.ascontiguousarray(features))
        if hasattr(features, "shape") and shape is None:
            shape, dtype = tuple(features.shape), features.dtype
        if shape is None or dtype is None:
            raise ValueError("a device pointer needs shape=(C, H, W) and dtype")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float16):
            raise ValueError(f"features must be float32 or float16, got {dtype}")
        c, h, w = shape
        if image.shape != (h, w, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be {h}×{w}×3 uint8 RGB, got {image.shape} {image.dtype}")
        n = h * w
        r, i32, i64 = cfg.radius, np.int32, np.int64
        suffix = "f16" if dtype == np.float16 else "f32"
        stream = stream or drv.Stream()

        # guide statistics, once for all channels
        rgb = g.to_gpu_async(np.ascontiguousarray(image), stream=stream)
        planes = g.empty((9, h, w), np.float32)
        tmp = g.empty((9, h, w), np.float32)
        sums = g.empty((9, h, w), np.float32)
        flat_grid = (_blocks(n, 256, 1 << 16), 1)
        self.f["guide_planes"](
            rgb.gpudata, planes.gpudata, i32(h), i32(w),
            block=(256, 1, 1), grid=flat_grid, stream=stream,
        )  # fmt: skip
        self.f["box_rows"](
            planes.gpudata, tmp.gpudata, i32(h), i32(w), i32(r),
            block=(ROW_TILE, 1, 1), grid=(_blocks(w, ROW_TILE), h, 9),
            shared=(ROW_TILE + 2 * r) * 4, stream=stream,
        )  # fmt: skip
        self.f["box_cols"](
            tmp.gpudata, sums.gpudata, i32(h), i32(w), i32(r),
            block=(128, 1, 1), grid=(_blocks(w, 128), 9), stream=stream,
        )  # fmt: skip
        mean = g.empty((3, h, w), np.float32)
        inv = g.empty((6, h, w), np.float32)
        self.f["guide_inverse"](
            sums.gpudata, mean.gpudata, inv.gpudata, i32(h), i32(w), i32(r), np.float32(cfg.eps),
            block=(256, 1, 1), grid=flat_grid, stream=stream,
        )  # fmt: skip
        del tmp, sums
        guide = planes  # its first three planes are I0, I1, I2

        # all channels filtered, then their covariance about the raw features' mean
        shift = self._channel_sums(features, suffix, c, n, stream) / n
        filtered = g.empty((c, h, w), np.float32)
        self._filter(features, dtype, c, h, w, guide, mean, inv, filtered, stream)
        nz = min(1024, _blocks(n, 1 << 15))
        per_block = -(-n // nz)
        partial = g.empty((nz, c, c), np.float64)
        shift_gpu = g.to_gpu_async(shift.astype(np.float32), stream=stream)
        self.f["gram_partial"](
            filtered.gpudata, shift_gpu.gpudata, partial.gpudata, i32(c), i64(n), i64(per_block),
            block=(GRAM_TILE, GRAM_TILE, 1),
            grid=(_blocks(c, GRAM_TILE), _blocks(c, GRAM_TILE), nz), stream=stream,
        )  # fmt: skip
        total = self._channel_sums(filtered, "f32", c, n, stream)
        acc = MomentAccumulator(shift.astype(np.float32).astype(np.float64))
        acc.add_moments(total - n * acc.shift, partial.get(stream=stream).sum(axis=0), n)
        basis = acc.basis(cfg.n_components)

        # the output: filter the raw features projected on the basis
        k = basis.components.shape[0]
        if k > 4:
            raise ValueError("the GPU path keeps at most 4 components")
        comps = g.to_gpu_async(np.ascontiguousarray(basis.components), stream=stream)
        shift64 = g.to_gpu_async(acc.shift, stream=stream)
        proj = g.empty((k, h, w), np.float32)
        self.f[f"project_{suffix}"](
            _ptr(features), comps.gpudata, shift64.gpudata, proj.gpudata, i32(c), i32(k), i64(n),
            block=(256, 1, 1), grid=flat_grid, stream=stream,
        )  # fmt: skip
        proj_f = g.empty((k, h, w), np.float32)
        self._filter(proj, np.float32, k, h, w, guide, mean, inv, proj_f, stream)
        offset = (basis.components @ (basis.mean - acc.shift)).astype(np.float32)
        offset_gpu = g.to_gpu_async(offset, stream=stream)
        blocks = min(1024, _blocks(n, REDUCE_THREADS))
        mm = g.empty((blocks, k, 2), np.float32)
        self.f["minmax_partial"](
            proj_f.gpudata, offset_gpu.gpudata, mm.gpudata, i32(k), i64(n),
            block=(REDUCE_THREADS, 1, 1), grid=(blocks, k), stream=stream,
        )  # fmt: skip
        mm_host = mm.get(stream=stream)
        lo, hi = mm_host[..., 0].min(axis=0), mm_host[..., 1].max(axis=0)
        span = hi - lo
        flat = (span <= 0) | basis.degenerate()
        scale = np.where(flat, 0.0, 1.0 / np.where(flat, 1.0, span)).astype(np.float32)
        out = g.empty((n, k), np.float32)
        self.f["normalize"](
            proj_f.gpudata, offset_gpu.gpudata,
            g.to_gpu_async(lo.astype(np.float32), stream=stream).gpudata,
            g.to_gpu_async(scale, stream=stream).gpudata, out.gpudata, i32(k), i64(n),
            block=(256, 1, 1), grid=flat_grid, stream=stream,
        )  # fmt: skip
        embedding = out.get(stream=stream)
        stream.synchronize()
        return CudaResult(
            embedding=embedding.reshape(h, w, k),
            basis=basis,
            filtered=filtered if return_filtered else None,
        )


_KERNELS = (
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
