"""Color guided filter (He et al. 2013) of many channels with one RGB guide, in NumPy/OpenCV.

The project's rule: boxes truncated at the border and normalized by their pixel count N(x).
Other window rules (the MATLAB-compatible mode) pass their own window mean. The guide's
(Σ + εU)⁻¹ is computed once and shared by all channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

WindowMean = Callable[[np.ndarray], np.ndarray]


def box_sum(x: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the (2r+1)² window around each pixel, truncated at the border (float32 in/out).

    ``x`` is H×W or H×W×C with C ≤ 512.
    """
    import cv2  # imported when used: the compiled kernels and the GPU path never need it

    k = 2 * radius + 1
    out = cv2.boxFilter(x, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return out.reshape(x.shape)


@dataclass(frozen=True)
class GuideStats:
    """Per-pixel statistics of the guide shared by all filtered channels."""

    guide: np.ndarray  # H×W×3 float32 in [0, 1]
    mean: np.ndarray  # H×W×3 window mean of I
    inv_cov: np.ndarray  # H×W×6 symmetric (Σ + εU)⁻¹ as (00, 01, 02, 11, 12, 22)
    window_mean: WindowMean  # the window rule, H×W[×C] → same shape
    radius: int
    inv_count: np.ndarray | None = None  # H×W 1 / N(x) for the truncated rule, else None

    def box_mean(self, x: np.ndarray) -> np.ndarray:
        return self.window_mean(x)


def truncated_mean(radius: int, shape: tuple[int, int]) -> tuple[WindowMean, np.ndarray]:
    """The project's window mean (truncated boxes ÷ N(x)) and its 1 / N(x) plane."""
    inv_count = (1.0 / box_sum(np.ones(shape, np.float32), radius)).astype(np.float32)

    def mean(x: np.ndarray) -> np.ndarray:
        s = box_sum(x, radius)
        return s * (inv_count if s.ndim == 2 else inv_count[..., None])

    return mean, inv_count


def guide_stats(
    guide: np.ndarray, radius: int, eps: float, window_mean: WindowMean | None = None
) -> GuideStats:
    """Compute the guide's window means and inverse regularized covariance."""
    guide = np.ascontiguousarray(guide, dtype=np.float32)
    h, w, _ = guide.shape
    inv_count = None
    if window_mean is None:
        window_mean, inv_count = truncated_mean(radius, (h, w))
    mean = window_mean(guide)
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    planes = [np.ascontiguousarray(guide[..., i]) for i in range(3)]
    second = window_mean(np.stack([planes[i] * planes[j] for i, j in pairs], axis=-1))
    means = [mean[..., i].astype(np.float64) for i in range(3)]
    # contiguous float64 planes of Σ + εU: the elementwise work below stays in cache lines
    a, b, c, d, e, f = (
        second[..., n] - means[i] * means[j] + (eps if i == j else 0.0)
        for n, (i, j) in enumerate(pairs)
    )
    # symmetric 3×3 [[a b c] [b d e] [c e f]]: adjugate / determinant
    i00 = d * f - e * e
    i01 = c * e - b * f
    i02 = b * e - c * d
    i11 = a * f - c * c
    i12 = b * c - a * e
    i22 = a * d - b * b
    scale = 1.0 / (a * i00 + b * i01 + c * i02)
    inv = np.empty((h, w, 6), np.float32)
    for n, plane in enumerate((i00, i01, i02, i11, i12, i22)):
        np.multiply(plane, scale, out=inv[..., n], casting="same_kind")
    return GuideStats(guide, mean, inv, window_mean, radius, inv_count)


def _apply_inv(inv: np.ndarray, v0: np.ndarray, v1: np.ndarray, v2: np.ndarray):
    """(Σ + εU)⁻¹ · v for per-pixel 3-vectors v given as three H×W×C planes."""
    i00, i01, i02, i11, i12, i22 = (inv[..., n, None] for n in range(6))
    return (
        i00 * v0 + i01 * v1 + i02 * v2,
        i01 * v0 + i11 * v1 + i12 * v2,
        i02 * v0 + i12 * v1 + i22 * v2,
    )


def coefficient_means(
    stats: GuideStats, src: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Window means of the filter's a (three planes) and b for H×W×C channels.

    The filtered output is ``Σ_k mean(a_k)·I_k + mean(b)``.
    """
    guide = stats.guide
    mean_p = stats.box_mean(src)
    cov = [
        stats.box_mean(guide[..., k, None] * src) - stats.mean[..., k, None] * mean_p
        for k in range(3)
    ]
    a0, a1, a2 = _apply_inv(stats.inv_cov, *cov)
    b = mean_p - (
        a0 * stats.mean[..., 0, None]
        + a1 * stats.mean[..., 1, None]
        + a2 * stats.mean[..., 2, None]
    )
    return stats.box_mean(a0), stats.box_mean(a1), stats.box_mean(a2), stats.box_mean(b)


def apply_coefficients(
    guide: np.ndarray, ma0: np.ndarray, ma1: np.ndarray, ma2: np.ndarray, mb: np.ndarray
) -> np.ndarray:
    """``Σ_k mean(a_k)·I_k + mean(b)`` for H×W×C coefficient planes and an H×W×3 guide."""
    return ma0 * guide[..., 0, None] + ma1 * guide[..., 1, None] + ma2 * guide[..., 2, None] + mb


def guided_filter(stats: GuideStats, src: np.ndarray) -> np.ndarray:
    """Filter H×W×C float32 channels (C ≤ 170) with the guide described by ``stats``."""
    src = np.ascontiguousarray(src, dtype=np.float32)
    squeeze = src.ndim == 2
    if squeeze:
        src = src[..., None]
    out = apply_coefficients(stats.guide, *coefficient_means(stats, src))
    return out[..., 0] if squeeze else out


def filter_at(
    guide: np.ndarray,
    crop: Callable[[int, int, int, int], np.ndarray],
    pixels: np.ndarray,
    radius: int,
    eps: float,
    block: int = 8,
) -> np.ndarray:
    """The filter's output (the truncated-window rule) at a few pixels only: (M, C) float32.

    ``guide`` is the whole H×W×3 guide in [0, 1]; ``crop(y0, y1, x0, x1)`` returns the C×h×w
    channels to filter over that rectangle; ``pixels`` is (M, 2) rows and columns. A pixel's
    output depends only on the pixels within 2r of it, so each ``block``² square holding some
    of ``pixels`` is cut out with that margin, the cut-outs are laid side by side in one mosaic
    and filtered together, with weights that leave out their parts outside the image (which
    reproduces the truncated windows there).
    """
    pixels = np.asarray(pixels, np.int64).reshape(-1, 2)
    if len(pixels) == 0:
        raise ValueError("no pixels given")
    h, w, _ = guide.shape
    r2 = 2 * radius
    side = block + 2 * r2
    blocks, which = np.unique(pixels // block, axis=0, return_inverse=True)
    cols = max(1, int(np.ceil(np.sqrt(len(blocks)))))
    rows = -(-len(blocks) // cols)
    mosaic_guide = np.zeros((rows * side, cols * side, 3), np.float32)
    weight = np.zeros(mosaic_guide.shape[:2], np.float32)
    mosaic_src = None
    origins = np.empty_like(blocks)  # image position of each tile's top-left corner
    for m, (by, bx) in enumerate(blocks):
        ty, tx = (m // cols) * side, (m % cols) * side
        oy, ox = by * block - r2, bx * block - r2
        y0, y1 = max(0, oy), min(h, oy + side)
        x0, x1 = max(0, ox), min(w, ox + side)
        src = crop(y0, y1, x0, x1)
        if mosaic_src is None:
            mosaic_src = np.zeros((*weight.shape, src.shape[0]), np.float32)
        region = (slice(ty + y0 - oy, ty + y1 - oy), slice(tx + x0 - ox, tx + x1 - ox))
        mosaic_guide[region] = guide[y0:y1, x0:x1]
        mosaic_src[region] = np.moveaxis(src, 0, -1)
        weight[region] = 1.0
        origins[m] = (oy - ty, ox - tx)
    count = box_sum(weight, radius)
    inv_count = np.divide(1.0, count, out=np.zeros_like(count), where=count > 0)

    def window_mean(x: np.ndarray) -> np.ndarray:
        if x.ndim == 2:
            return box_sum(x * weight, radius) * inv_count
        return box_sum(x * weight[..., None], radius) * inv_count[..., None]

    out = guided_filter(guide_stats(mosaic_guide, radius, eps, window_mean), mosaic_src)
    out = out.reshape(*weight.shape, -1)
    at = pixels - origins[which.ravel()]
    return out[at[:, 0], at[:, 1]]
