"""The network's full-resolution head, evaluated band by band on the host.

The exported graph's trunk ends where its tensors are still small: the input tap after its
3×3 conv + ReLU (``t_in``: 4 channels, full resolution), the pool1 tap after its conv + ReLU
(``t_p1``: 124 channels, 1/4 resolution) and the sum of the deep taps' 512-channel projections
(``deep``: 1/8 resolution). The head computes, for any rows and columns,

    features = head · ReLU(fuse_input · t_in + up(fuse_pool1 · t_p1) + up(deep) + bias) + b

with the project's bilinear rule (``sss_rt.resample``). Nothing but the rounding order differs
from the whole graph. In fp32 the compiled kernel (``native.hidden_rows``) does the upsampling,
fuse and ReLU in one pass and a BLAS GEMM the 512→128 conv; without it, NumPy does the same.
With ``variant=`` a fused kernel (:func:`sss_rt.precision.head_variant`) one kernel does
all of it per tile of pixels — in bf16 on AMX or AVX512-BF16, the 512-channel layer rounded to
bf16 and never written to memory, or (``avx512-vnni-int8``) in int8 on AVX-512 VNNI, the layer
quantized to uint8 per pixel (``native.head_rows_bf16``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sss_rt import blas, native
from sss_rt.bands import ComputedSource
from sss_rt.resample import int32_taps, linear_taps


@dataclass(frozen=True)
class HeadWeights:
    """The full-resolution part of the inference form, as matrices."""

    fuse_input: np.ndarray  # (512, 4)
    fuse_pool1: np.ndarray  # (512, 124)
    fuse_bias: np.ndarray  # (512,) the fuse conv's bias (plus the pool1/deep convs' own, if any)
    head: np.ndarray  # (128, 512)
    head_bias: np.ndarray  # (128,)

    @cached_property
    def packed_head(self) -> native.PackedHead:
        """The last conv in the bf16 kernel's tile layout (packed once)."""
        return native.PackedHead.pack(self.head, self.head_bias)


class HeadSource(ComputedSource):
    """Features of one image from its trunk outputs, computed for any band on demand.

    ``t_in`` is 4×H×W, ``t_p1`` 124×(H/4)×(W/4), ``deep`` 512×(H/8)×(W/8) (float32; the
    low-resolution sizes are whatever the trunk produced). ``compiled``: use the compiled
    kernel (default: when it is built). ``variant``: the fused kernel to run the head in — bf16
    or int8, one of ``native.head_variants()`` (None: fp32). ``bf16=``, its old name, still
    works (deprecated).
    """

    #: the 512-channel intermediate is computed this many MB at a time
    CHUNK_MB = 64

    def __init__(
        self,
        weights: HeadWeights,
        t_in: np.ndarray,
        t_p1: np.ndarray,
        deep: np.ndarray,
        threads: int | None = None,
        compiled: bool | None = None,
        variant: str | None = None,
        bf16: str | None = None,
    ):
        if bf16 is not None:
            warnings.warn(
                "HeadSource(bf16=) is now variant= (it also names the int8 kernel)",
                DeprecationWarning,
                stacklevel=2,
            )
            variant = variant or bf16
        self.w = weights
        self.t_in = np.ascontiguousarray(t_in, dtype=np.float32)
        self.t_p1 = np.asarray(t_p1, np.float32)
        self.deep = np.asarray(deep, np.float32)
        self.threads = threads
        self.compiled = native.available() and compiled is not False
        self.variant = variant if self.compiled else None
        _, self.height, self.width = self.t_in.shape
        self.channels = weights.head.shape[0]
        self._y_p1 = linear_taps(self.height, self.t_p1.shape[1])
        self._y_deep = linear_taps(self.height, self.deep.shape[1])
        self._x_p1 = linear_taps(self.width, self.t_p1.shape[2])
        self._x_deep = linear_taps(self.width, self.deep.shape[2])

    def _compute(
        self, y0: int, y1: int, x0: int, x1: int, project: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        w = self.w
        if self.variant is not None:
            return self._compute_bf16(y0, y1, x0, x1, project)
        width = x1 - x0
        mid = w.head.shape[1]
        if project is not None:
            head, bias = self._folded(*project)
            zero = np.zeros(head.shape[1])
        else:
            head, bias = w.head, w.head_bias
        out = np.empty((head.shape[0], y1 - y0, width), np.float32)
        step = max(1, (self.CHUNK_MB << 20) // (mid * width * 4))
        buf = np.empty(mid * min(step, y1 - y0) * width, np.float32)
        for a in range(y0, y1, step):
            b = min(y1, a + step)
            hidden = self._hidden(a, b, x0, x1, buf[: mid * (b - a) * width])
            if project is not None:  # float64 sums, as sss_rt.bands.project
                flat = hidden.reshape(mid, 1, -1)
                if self.compiled:
                    res = native.project(flat, head, zero, self.threads).reshape(len(head), -1)
                else:
                    flat64 = flat.reshape(mid, -1).astype(np.float64)
                    res = blas.matmul(head, flat64, self.threads).astype(np.float32)
            else:
                res = blas.matmul(head, hidden.reshape(mid, -1), self.threads)
            res += bias[:, None].astype(res.dtype)
            out[:, a - y0 : b - y0] = res.reshape(-1, b - a, width)
        return out

    def _compute_bf16(
        self, y0: int, y1: int, x0: int, x1: int, project: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        w = self.w
        if project is not None:
            folded = self._folded(*project)
            head = native.PackedHead.pack(*(a.astype(np.float32) for a in folded))
        else:
            head = w.packed_head
        out = np.empty((head.channels, y1 - y0, x1 - x0), np.float32)
        # the 512-channel layer stays in the kernel; bands of rows bound only the projected
        # pool1 block (512 channels at 1/4 × 1/4 resolution: 1/16 of a full-resolution band),
        # to 4·CHUNK_MB (at 1 MP: one band, 128 MB)
        step = max(1, (self.CHUNK_MB << 26) // (w.fuse_pool1.shape[0] * (x1 - x0) * 4))
        for a in range(y0, y1, step):
            b = min(y1, a + step)
            t_in, first, ups = self._inputs(a, b, x0, x1)
            native.head_rows_bf16(
                t_in, w.fuse_input, w.fuse_bias, head, ups, first, b - a, self.threads, out,
                self.variant, out_row=a - y0,
            )  # fmt: skip
        return out

    def _folded(self, v: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The last conv with a projection folded in: k×512 weights and k biases, float64."""
        w = self.w
        return v @ w.head.astype(np.float64), v @ (w.head_bias.astype(np.float64) - shift)

    def _inputs(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, int, tuple]:
        """What the head's kernels read for rows ``y0:y1``, columns ``x0:x1``: the input tap
        (the whole array, or a contiguous copy of the region), the row of ``y0`` in it, and the
        two upsampled blocks with their taps."""
        ups = (
            self._block(self.t_p1, self._y_p1, self._x_p1, y0, y1, x0, x1, self.w.fuse_pool1),
            self._block(self.deep, self._y_deep, self._x_deep, y0, y1, x0, x1),
        )
        if x0 == 0 and x1 == self.width:
            return self.t_in, y0, ups
        return np.ascontiguousarray(self.t_in[:, y0:y1, x0:x1]), 0, ups

    def _block(self, low, ys, xs, y0, y1, x0, x1, project=None) -> tuple:
        """The low-resolution rows that output rows ``y0:y1`` need, and their taps."""
        i0, i1, wy = (a[y0:y1] for a in ys)
        lo, hi = int(i0.min()), int(i1.max()) + 1
        block = low[:, lo:hi]
        if project is not None:
            block = _project(project, block, self.threads)
        block = np.ascontiguousarray(block, dtype=np.float32)
        xi0, xi1, xw = (a[x0:x1] for a in xs)
        return (block, *int32_taps((i0 - lo, i1 - lo, wy)), *int32_taps((xi0, xi1, xw)))

    def _hidden(self, y0: int, y1: int, x0: int, x1: int, buf: np.ndarray) -> np.ndarray:
        """ReLU(fuse) of rows ``y0:y1``, columns ``x0:x1``: the 512-channel input of the last
        conv, in ``buf`` (flat float32 storage reused between chunks)."""
        w = self.w
        t_in, first, ups = self._inputs(y0, y1, x0, x1)
        out = buf.reshape(len(w.fuse_bias), y1 - y0, x1 - x0)
        if self.compiled:
            return native.hidden_rows(
                t_in, w.fuse_input, w.fuse_bias, ups, first, y1 - y0, self.threads, out
            )
        return _hidden_numpy(t_in[:, first : first + y1 - y0], w, ups, out)


def _project(weights: np.ndarray, block: np.ndarray, threads: int | None) -> np.ndarray:
    """weights (out×c) applied to a c×rows×w block, its columns in fixed parts over threads
    (:func:`sss_rt.blas.matmul`)."""
    c, bh, bw = block.shape
    flat = np.ascontiguousarray(block, dtype=np.float32).reshape(c, bh * bw)
    return blas.matmul(weights, flat, threads).reshape(-1, bh, bw)


def _upsample(block, yi0, yi1, yw, xi0, xi1, xw) -> np.ndarray:
    """Bilinear rows and columns of a C×rows×w block at the given taps (NumPy)."""
    top, bottom = block[:, yi0], block[:, yi1]
    rows = top + (bottom - top) * yw[None, :, None]
    left, right = rows[:, :, xi0], rows[:, :, xi1]
    return left + (right - left) * xw[None, None, :]


def _hidden_numpy(t_in: np.ndarray, w: HeadWeights, ups: tuple, out: np.ndarray) -> np.ndarray:
    c, n, width = out.shape
    res = blas.matmul(w.fuse_input, t_in.reshape(t_in.shape[0], -1)).reshape(c, n, width)
    for up in ups:
        res += _upsample(*up)
    res += w.fuse_bias[:, None, None]
    np.maximum(res, 0.0, out=out)
    return out
