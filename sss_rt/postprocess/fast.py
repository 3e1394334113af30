"""Fast mode: He & Sun's fast guided filter, the covariance from the subsampled grid.

The features are area-averaged s× (band by band from the source: only the 1/s² grid is held),
filtered on that grid with the radius scaled to match, and the filter's coefficient means of the
three projected channels are upsampled bilinearly against the full-resolution guide. Their
smooth coefficients against the sharp guide overshoot at a few edge pixels, and a min–max
normalization would carry that overshoot into every pixel; so the [0, 1] range is taken from the
exact filter evaluated at the fast output's most extreme pixels (``exact_bounds``), and values
beyond it are clipped.
"""

from __future__ import annotations

import cv2
import numpy as np

from sss_rt import native
from sss_rt.bands import FeatureSource, project
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import band_filter, image_to_guide, use_native
from sss_rt.postprocess.guided_filter import filter_at
from sss_rt.postprocess.moments import MomentAccumulator, rough_mean
from sss_rt.postprocess.pca import PCABasis, to_unit_embedding
from sss_rt.resample import area_weights
from sss_rt.timing import timed

#: the [0, 1] range comes from the exact filter at this many of the fast output's most extreme
#: pixels per side and dimension
EXTREME_PIXELS = 8


def run(
    source: FeatureSource,
    image: np.ndarray,
    config: PostprocessConfig,
    keep_features: bool = False,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, PCABasis, FeatureSource]:
    c, h, w = source.shape
    s = config.subsample
    low = (max(1, -(-h // s)), max(1, -(-w // s)))
    compiled = use_native(config)
    if keep_features and not source.in_memory:
        with timed(timings, "network"):
            source = source.materialize()
    with timed(timings, "guided_filter"):
        # the full-resolution guide is made again for the upsampling: not held meanwhile
        guide_low = cv2.resize(image_to_guide(image), low[::-1], interpolation=cv2.INTER_AREA)
        guide_low = guide_low.reshape(*low, 3)
    radius_low = max(1, round(config.radius / s)) if config.radius > 0 else 0
    # area averaging is linear: projecting the subsampled features equals subsampling the
    # projected ones, at 1/s² of the cost
    feats_low = shrink(source, low, config, compiled, timings)
    with timed(timings, "guided_filter"):
        filt = band_filter(guide_low, 0, low[0], config, radius=radius_low)
    acc = MomentAccumulator(rough_mean(feats_low), compiled)
    rows = int(np.clip((config.band_mb << 20) // max(1, c * low[1] * 4), 1, low[0]))
    for y0 in range(0, low[0], rows):  # the filtered grid a band at a time
        y1 = min(low[0], y0 + rows)
        with timed(timings, "guided_filter"):
            filtered = filt.filter(feats_low, y0, y1)
        with timed(timings, "pca"):
            acc.add_columns(filtered.reshape(c, -1), config.threads)
        del filtered
    with timed(timings, "pca"):
        basis = acc.basis(config.n_components)
        proj_low = project(feats_low, basis.components, basis.mean, config.threads, compiled)
    del feats_low
    with timed(timings, "guided_filter"):
        means = filt.filter(proj_low, coefficients=True)  # 4×k×h×w
        del filt
        guide = image_to_guide(image)
        if compiled:
            projected = native.apply_upsampled(means, guide, config.threads)
        else:
            projected = apply_upsampled_numpy(means, guide)
        del means
    with timed(timings, "normalize"):
        bounds = exact_bounds(projected, guide, source, basis, config)
        flat = projected.reshape(-1, h * w).T
        del projected, guide
        return to_unit_embedding(flat, basis, (h, w), bounds), basis, source


def shrink(
    source: FeatureSource,
    low: tuple[int, int],
    config: PostprocessConfig,
    compiled: bool,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Area averages of the source's C×H×W features on the low × grid (OpenCV's INTER_AREA
    rule), read band by band: C×low[0]×low[1] float32."""
    c, h, w = source.shape
    hl, wl = low
    out = np.empty((c, hl, wl), np.float32)
    s = h // hl
    # low rows per band: about band_mb of features read at a time
    per_band = max(1, (config.band_mb << 20) // max(1, c * w * 4 * max(1, h // hl)))
    if source.in_memory:  # its bands are views: one pass over the whole array
        per_band = hl
    if h == hl * s and w == wl * s:  # whole blocks: block means
        for i0 in range(0, hl, per_band):
            i1 = min(hl, i0 + per_band)
            with timed(timings, "network"):
                band = source.rows(i0 * s, i1 * s)
            with timed(timings, "guided_filter"):
                if compiled:
                    out[:, i0:i1] = native.shrink(band, s, config.threads)
                else:
                    blocks = band.reshape(c, i1 - i0, s, wl, s)
                    out[:, i0:i1] = blocks.mean(axis=(2, 4), dtype=np.float64)
        return out
    import scipy.sparse as sp

    rr, rc, rv = area_weights(hl, h)
    cr, cc, cv = area_weights(wl, w)
    cols = sp.csr_matrix((cv.astype(np.float32), (cc, cr)), shape=(w, wl))
    for i0 in range(0, hl, per_band):
        i1 = min(hl, i0 + per_band)
        sel = (rr >= i0) & (rr < i1)
        j0, j1 = int(rc[sel].min()), int(rc[sel].max()) + 1
        with timed(timings, "network"):
            band = np.ascontiguousarray(source.rows(j0, j1))
        with timed(timings, "guided_filter"):
            rows = sp.csr_matrix(
                (rv[sel].astype(np.float32), (rr[sel] - i0, rc[sel] - j0)), shape=(i1 - i0, j1 - j0)
            )
            narrow = (band.reshape(-1, w) @ cols).reshape(c, j1 - j0, wl)  # C×n×wl
            stacked = np.ascontiguousarray(narrow.transpose(1, 0, 2)).reshape(j1 - j0, c * wl)
            out[:, i0:i1] = np.asarray(rows @ stacked).reshape(i1 - i0, c, wl).transpose(1, 0, 2)
    return out


def apply_upsampled_numpy(means: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """Σᵢ up(mean aᵢ)·Iᵢ + up(mean b) with OpenCV's bilinear upsampling: K×H×W (the NumPy
    engine's version of ``native.apply_upsampled``)."""
    h, w = guide.shape[:2]
    projected = np.empty((means.shape[1], h, w), np.float32)
    planes = [np.ascontiguousarray(guide[..., i]) for i in range(3)]  # cv2.split: 6× slower
    for k, out in enumerate(projected):
        cv2.resize(
            np.ascontiguousarray(means[3, k]), (w, h), dst=out, interpolation=cv2.INTER_LINEAR
        )
        for i in range(3):
            up = cv2.resize(
                np.ascontiguousarray(means[i, k]), (w, h), interpolation=cv2.INTER_LINEAR
            )
            out += up * planes[i]
    return projected


def extreme_pixels(planes: np.ndarray, count: int) -> np.ndarray:
    """(M, 2) rows and columns of the ``count`` largest and ``count`` smallest values of each
    H×W plane, without repeats."""
    _k, _h, w = planes.shape
    found = []
    for plane in planes:
        flat = plane.ravel()
        sub = plane[::8, ::8].ravel()
        if sub.size > 2 * count:
            # the count-th smallest (largest) value of a subset bounds the whole plane's count
            # smallest (largest) values: one pass keeps every candidate
            part = np.partition(sub, (count - 1, sub.size - count))
            idx = np.flatnonzero((flat <= part[count - 1]) | (flat >= part[sub.size - count]))
        else:
            idx = np.arange(flat.size)
        if idx.size > 2 * count:
            order = np.argpartition(flat[idx], (count - 1, idx.size - count))
            idx = np.concatenate([idx[order[:count]], idx[order[idx.size - count :]]])
        found.append(idx)
    idx = np.unique(np.concatenate(found))
    return np.stack(np.divmod(idx, w), axis=1)


def exact_bounds(
    projected: np.ndarray,
    guide: np.ndarray,
    source: FeatureSource,
    basis: PCABasis,
    config: PostprocessConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension min and max of the exact filter's output, evaluated at the pixels where
    the fast mode's k×H×W ``projected`` output is most extreme (the source computes only the
    small rectangles around them)."""
    pixels = extreme_pixels(projected, EXTREME_PIXELS)
    components, mean = basis.components, basis.mean

    def crop(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        block = source.region(y0, y1, x0, x1).reshape(source.channels, -1)
        values = components @ (block.astype(np.float64) - mean[:, None])
        return values.astype(np.float32).reshape(-1, y1 - y0, x1 - x0)

    values = filter_at(guide, crop, pixels, config.radius, config.eps)
    return values.min(axis=0), values.max(axis=0)
