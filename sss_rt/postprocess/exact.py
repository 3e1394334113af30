"""Exact mode: every channel guided-filtered, a centred PCA of all pixels, [0, 1] per dim.

Two passes over the feature source, in bounded memory, written once (:func:`two_passes`) for
every device; a device supplies an :class:`Engine` (where bands live, how they are filtered,
summed and projected — this module's :class:`CpuEngine`, and
:class:`sss_rt.postprocess.cuda.CudaEngine`):

1. **Moments.** Each band of the C filtered channels is folded into the float64 covariance
   (``MomentAccumulator``, about a shift taken from the first band) and dropped; the PCA basis
   comes from the sums.
2. **Projection.** The 3-d output is the filter of the raw features projected on the basis —
   the filter is linear for a fixed guide and keeps constants, so
   ``filter(V·(p − s)) = V·(filter(p) − s)`` — which needs 3 filtered channels instead of C
   (a split backend folds the projection into its last layer: no C-channel band at all).
3. **Normalization.** Each component to [0, 1] by its own min and max, after removing the
   basis mean's offset ``V·(mean − s)``; a degenerate or constant component is 0.

Bands carry a halo of 2r rows on each side and their own guide tables, so the result equals the
whole-image filter up to float rounding. On the CPU, a source held in memory whose guide tables
fit (``GUIDE_MB``) is filtered against the whole image's tables with no halo, and a split source
whose features take at most ``KEEP_FEATURES_MB`` is computed once and held.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

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
from sss_rt.postprocess.pca import PCABasis, normalize_unit
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


class Engine(Protocol):
    """A device's part of the exact mode; :func:`two_passes` drives it.

    ``plan`` returns the (possibly materialized) source and the bands of each pass as
    ``(y0, y1, b0, b1)`` (:func:`bands`). ``filter_band`` reads rows ``b0:b1`` and filters output
    rows ``y0:y1`` of every channel; ``shift`` (float64, C) is taken from the first band;
    ``moments`` gives the filtered band's float64 ``(total, gram, count)`` about the shift, or a
    handle ``resolve(handles, shift)`` turns into them (a device defers its copies to one wait).
    ``project`` filters the raw features of the band projected on ``components`` about
    ``shift`` into the engine's k×H×W output; ``normalize`` maps that output, less ``offset``
    per component, to H×W×k in [0, 1] (``flat`` components: 0).
    """

    def plan(self, source: FeatureSource) -> tuple[FeatureSource, list[Band], list[Band]]: ...

    def filter_band(self, source: FeatureSource, y0: int, y1: int, b0: int, b1: int) -> Any: ...

    def shift(self, band: Any) -> np.ndarray: ...

    def moments(self, band: Any, shift: np.ndarray) -> Any: ...

    def resolve(
        self, handles: list[Any], shift: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray, int]]: ...

    def project(
        self,
        source: FeatureSource,
        band: Band,
        components: np.ndarray,
        shift: np.ndarray,
    ) -> None: ...

    def normalize(self, offset: np.ndarray, flat: np.ndarray) -> np.ndarray: ...


Band = tuple[int, int, int, int]


def two_passes(
    engine: Engine,
    source: FeatureSource,
    config: PostprocessConfig,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, PCABasis, FeatureSource]:
    """The exact mode on ``engine``: (H×W×k embedding in [0, 1], basis, the source as read)."""
    k = config.n_components
    source, first, second = engine.plan(source)
    shift: np.ndarray | None = None
    handles = []
    for y0, y1, b0, b1 in first:
        band = engine.filter_band(source, y0, y1, b0, b1)
        with timed(timings, "pca"):
            if shift is None:
                shift = np.asarray(engine.shift(band), np.float64)
            handles.append(engine.moments(band, shift))
        del band
    assert shift is not None
    with timed(timings, "pca"):
        acc = MomentAccumulator(shift)
        for total, gram, count in engine.resolve(handles, shift):
            acc.add_moments(total, gram, count)
        basis = acc.basis(k)
    comps = basis.components
    for band_rows in second:
        engine.project(source, band_rows, comps, shift)
    with timed(timings, "normalize"):
        offset = (comps @ (basis.mean - shift)).astype(np.float32)
        flat = basis.degenerate()
        return engine.normalize(offset, flat), basis, source


class CpuEngine:
    """The exact mode's CPU engine: the compiled filter (or NumPy's), float64 Grams, the
    source's own projection (folded into a split head)."""

    def __init__(
        self,
        image: np.ndarray,
        config: PostprocessConfig,
        keep_features: bool = False,
        timings: dict[str, float] | None = None,
    ):
        self.image, self.config, self.keep, self.timings = image, config, keep_features, timings
        self.compiled = use_native(config)
        self.cache: dict[tuple[int, int], BandFilter] = {}

    def plan(self, source: FeatureSource) -> tuple[FeatureSource, list[Band], list[Band]]:
        c, h, w = source.shape
        cfg, timings = self.config, self.timings
        if not source.in_memory and (self.keep or source.nbytes <= KEEP_FEATURES_MB << 20):
            with timed(timings, "network"):
                source = source.materialize()
        with timed(timings, "guided_filter"):
            self.guide = image_to_guide(self.image)
        whole = source.in_memory and h * w * TABLE_BYTES <= GUIDE_MB << 20
        halo = -1 if whole else 2 * cfg.radius
        band_mb = cfg.band_mb << 20
        rows = int(np.clip(band_mb // max(c * w * 4, 1), 1, h))
        if not whole:
            rows = max(rows, 4 * halo, 8)
        self.rows1 = rows
        # pass 2 in bands: a band's tables and its projected rows within twice the band budget
        rows2 = (
            h
            if whole
            else max(4 * halo, 8, 2 * band_mb // (w * (TABLE_BYTES + 8 * cfg.n_components)))
        )
        self.projected = np.empty((cfg.n_components, h, w), np.float32)
        self.h = h
        return source, list(bands(h, rows, halo)), list(bands(h, rows2, halo))

    def _filter_for(self, b0: int, b1: int) -> BandFilter:
        if (b0, b1) not in self.cache:
            self.cache.clear()  # one band's tables at a time (the whole image's are reused)
            self.cache[b0, b1] = band_filter(
                self.guide, b0, b1, self.config, reuse=(b0, b1) == (0, self.h)
            )
        return self.cache[b0, b1]

    def filter_band(
        self, source: FeatureSource, y0: int, y1: int, b0: int, b1: int
    ) -> tuple[np.ndarray, np.ndarray]:
        c, _, w = source.shape
        with timed(self.timings, "network"):
            feats = source.rows(b0, b1)
        with timed(self.timings, "guided_filter"):
            buf = scratch.array("exact.band", (c * self.rows1 * w,), np.float32)
            out = buf[: c * (y1 - y0) * w].reshape(c, -1, w)
            return feats, self._filter_for(b0, b1).filter(feats, y0 - b0, y1 - b0, out)

    def shift(self, band: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return rough_mean(band[0])

    def moments(
        self, band: tuple[np.ndarray, np.ndarray], shift: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        filtered = band[1]
        q = filtered.reshape(filtered.shape[0], -1)
        acc = MomentAccumulator(shift, self.compiled)
        acc.add_columns(q, self.config.threads)
        return acc.total, acc.gram, acc.count

    def resolve(
        self, handles: list[Any], shift: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray, int]]:
        return handles

    def project(
        self, source: FeatureSource, band: Band, components: np.ndarray, shift: np.ndarray
    ) -> None:
        y0, y1, b0, b1 = band
        with timed(self.timings, "network"):
            proj = source.projected_rows(b0, b1, components, shift, self.config.threads)
        with timed(self.timings, "guided_filter"):
            dst = self.projected[:, y0:y1]
            if dst.flags.c_contiguous:
                self._filter_for(b0, b1).filter(proj, y0 - b0, y1 - b0, dst)
            else:
                dst[...] = self._filter_for(b0, b1).filter(proj, y0 - b0, y1 - b0)

    def normalize(self, offset: np.ndarray, flat: np.ndarray) -> np.ndarray:
        self.cache.clear()
        k, h, w = self.projected.shape
        columns = self.projected.reshape(k, -1).T
        columns -= offset
        return normalize_unit(columns, flat).reshape(h, w, k)


def run(
    source: FeatureSource,
    image: np.ndarray,
    config: PostprocessConfig,
    keep_features: bool = False,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, PCABasis, FeatureSource]:
    """Exact post-processing of ``source`` with ``image`` as guide on the CPU: (H×W×k
    embedding, basis, the source as read — materialized when it was worth holding)."""
    engine = CpuEngine(image, config, keep_features, timings)
    return two_passes(engine, source, config, timings)
