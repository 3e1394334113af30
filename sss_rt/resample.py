"""The project's bilinear resampling rules: half-pixel centres with clamped edges (the
project's own), and TensorFlow 1's asymmetric rule (:func:`asymmetric_taps`, the authors').

It is ONNX ``Resize`` (``linear``, ``half_pixel``), PyTorch's ``interpolate(mode="bilinear",
align_corners=False)`` and OpenCV's ``INTER_LINEAR`` when enlarging. The network's head (every
backend's banded evaluation), the fast post-processing's upsampling and training's
``forward_at`` all take their taps from here.
"""

from __future__ import annotations

import numpy as np


def linear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 (int64) and the weight of i1 (float32) for each output position
    along one axis."""
    scale = out_size / in_size
    x = (np.arange(out_size, dtype=np.float64) + 0.5) / scale - 0.5
    x = np.clip(x, 0.0, in_size - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (x - i0).astype(np.float32)


def asymmetric_taps(
    out_size: int, in_size: int, offset: int = 0, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The taps of TensorFlow 1's ``resize_bilinear`` (no half-pixel offset: source =
    destination × in/out, the upper neighbour clamped; ONNX ``Resize`` ``asymmetric``), the
    rule of the authors' network (:mod:`sss_rt.families`), for output positions
    ``offset … offset + count − 1`` of an ``out_size`` axis. The scale is float32, as
    TensorFlow computes it."""
    count = out_size - offset if count is None else count
    scale = np.float32(in_size) / np.float32(out_size)
    x = np.arange(offset, offset + count, dtype=np.float32) * scale
    i0 = np.minimum(np.floor(x).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (x - i0).astype(np.float32)


def int32_taps(taps: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """``linear_taps`` in the compiled kernels' types: contiguous int32, int32, float32."""
    i0, i1, weight = taps
    return (
        np.ascontiguousarray(i0, dtype=np.int32),
        np.ascontiguousarray(i1, dtype=np.int32),
        np.ascontiguousarray(weight, dtype=np.float32),
    )


def area_weights(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-average downsampling along one axis (OpenCV's ``INTER_AREA``): output i averages
    the input interval [i·s, (i+1)·s), s = in/out, each input weighted by its overlap.

    Returns the (rows, cols, weights) of the out×in weight matrix's non-zeros, row-major.
    """
    if out_size > in_size:
        raise ValueError("area_weights only shrinks")
    scale = in_size / out_size
    rows, cols, weights = [], [], []
    for i in range(out_size):
        lo, hi = i * scale, min((i + 1) * scale, in_size)
        for j in range(int(np.floor(lo)), int(np.ceil(hi))):
            overlap = min(hi, j + 1) - max(lo, j)
            if overlap > 1e-12:
                rows.append(i)
                cols.append(j)
                weights.append(overlap / scale)
    return np.asarray(rows), np.asarray(cols), np.asarray(weights, np.float64)
