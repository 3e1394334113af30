"""Exact mode: every channel guided-filtered, a centred PCA of all pixels, [0, 1] per dim.

Two passes over the feature source, in bounded memory:

1. **Moments.** Each band of the C filtered channels is folded into the float64 covariance
   (``MomentAccumulator``) and dropped; the PCA basis comes from the sums.
2. **Projection.** The 3-d output is the filter of the raw features projected on the basis —
   the filter is linear for a fixed guide and keeps constants, so
   ``filter(V·(p − s)) = V·(filter(p) − s)`` — which needs 3 filtered channels instead of C
   (a split backend folds the projection into its last layer: no C-channel band at all).

A source held in memory whose guide tables fit (``GUIDE_MB``) is filtered against the whole
image's tables, band after band, with no halo. Any other source is read in bands carrying a halo
of 2r rows on each side, with each band's own tables: the result equals the whole-image filter
up to float rounding. A split source whose features take at most ``KEEP_FEATURES_MB`` is
computed once and held instead (its rows then cost nothing in the second pass).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sss_rt.bands import FeatureSource
from sss_rt.postprocess import scratch
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import (
    TABLE_BYTES,
    BandFilter,
    band_filter,
    image_to_guide,
    use_native,
)
from sss_rt.postprocess.moments import MomentAccumulator, rough_mean
from sss_rt.postprocess.pca import PCABasis, to_unit_embedding
from sss_rt.timing import timed

#: features of a split source up to this size are computed once and held
KEEP_FEATURES_MB = 1024
#: whole-image guide tables up to this size; above it, bands with halos
GUIDE_MB = 640


def bands(h: int, rows: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """(y0, y1, b0, b1): output rows y0:y1 and the rows b0:b1 read for them."""
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        if halo < 0:  # the whole image is every band's context
            yield y0, y1, 0, h
        else:
            yield y0, y1, max(0, y0 - halo), min(h, y1 + halo)


def run(
    source: FeatureSource,
    image: np.ndarray,
    config: PostprocessConfig,
    keep_features: bool = False,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, PCABasis, FeatureSource]:
    """Exact post-processing of ``source`` with ``image`` as guide: (H×W×k embedding, basis,
    the source as read — materialized when it was worth holding)."""
    c, h, w = source.shape
    r, k = config.radius, config.n_components
    compiled = use_native(config)
    if not source.in_memory and (keep_features or source.nbytes <= KEEP_FEATURES_MB << 20):
        with timed(timings, "network"):
            source = source.materialize()
    with timed(timings, "guided_filter"):
        guide = image_to_guide(image)
    whole = source.in_memory and h * w * TABLE_BYTES <= GUIDE_MB << 20
    halo = -1 if whole else 2 * r
    band_mb = config.band_mb << 20
    cache: dict[tuple[int, int], BandFilter] = {}

    def filter_for(b0: int, b1: int) -> BandFilter:
        if (b0, b1) not in cache:
            cache.clear()  # one band's tables at a time (the whole image's are reused)
            cache[b0, b1] = band_filter(guide, b0, b1, config, reuse=(b0, b1) == (0, h))
        return cache[b0, b1]

    # pass 1: covariance of the filtered channels, about a rough mean of the first band read
    rows = int(np.clip(band_mb // max(c * w * 4, 1), 1, h))
    if not whole:
        rows = max(rows, 4 * halo, 8)
    buf = scratch.array("exact.band", (c * rows * w,), np.float32)
    acc: MomentAccumulator | None = None
    for y0, y1, b0, b1 in bands(h, rows, halo):
        with timed(timings, "network"):
            feats = source.rows(b0, b1)
        with timed(timings, "guided_filter"):
            filt = filter_for(b0, b1)
            out = filt.filter(feats, y0 - b0, y1 - b0, buf[: c * (y1 - y0) * w].reshape(c, -1, w))
        with timed(timings, "pca"):
            if acc is None:
                acc = MomentAccumulator(rough_mean(feats), compiled)
            acc.add_columns(out.reshape(c, -1), config.threads)
    del buf
    assert acc is not None
    with timed(timings, "pca"):
        basis = acc.basis(k)
    shift, comps = acc.shift, basis.components

    # pass 2: filter the raw features projected on the basis
    # (in bands: a band's tables and its projected rows within twice the band budget)
    rows = h if whole else max(4 * halo, 8, 2 * band_mb // (w * (TABLE_BYTES + 8 * k)))
    projected = np.empty((k, h, w), np.float32)
    for y0, y1, b0, b1 in bands(h, rows, halo):
        with timed(timings, "network"):
            proj = source.projected_rows(b0, b1, comps, shift, config.threads)
        with timed(timings, "guided_filter"):
            dst = projected[:, y0:y1]
            if dst.flags.c_contiguous:
                filter_for(b0, b1).filter(proj, y0 - b0, y1 - b0, dst)
            else:
                dst[...] = filter_for(b0, b1).filter(proj, y0 - b0, y1 - b0)
    cache.clear()
    with timed(timings, "normalize"):
        flat = projected.reshape(k, -1).T
        flat -= (comps @ (basis.mean - shift)).astype(np.float32)
        return to_unit_embedding(flat, basis, (h, w)), basis, source
