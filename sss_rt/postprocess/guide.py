"""The guide's statistics for a band of rows, and the guided filter that uses them.

``band_filter(guide, b0, b1, ...)`` returns a :class:`BandFilter` for rows ``b0:b1`` of an
H×W×3 guide in [0, 1]: its statistics are exactly the whole image's (they are computed on rows
``b0 − r : b1 + r`` and cropped: a row's statistics depend only on guide rows within r), and it
filters C×(b1−b0)×W channels of those rows. Its box sums of the filter's coefficients stop at the
band's edges, so rows within 2r of an edge that is not the image's are wrong: callers give
each band a halo of 2r rows (or use the whole image as one band). Two engines, one interface:
the compiled kernel (``NativeBandFilter``) and NumPy/OpenCV (``NumpyBandFilter``).
"""

from __future__ import annotations

import abc

import numpy as np

from sss_rt import native
from sss_rt.postprocess import scratch
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guided_filter import (
    GuideStats,
    coefficient_means,
    guide_stats,
    guided_filter,
    truncated_mean,
)

#: bytes per pixel of the compiled filter's guide tables (H×W×4 + H×W×10 float64)
TABLE_BYTES = 112


def image_to_guide(image: np.ndarray) -> np.ndarray:
    """uint8 RGB H×W×3 → float32 guide in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"guide image must be H×W×3, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def use_native(config: PostprocessConfig) -> bool:
    """Whether ``config`` selects the compiled kernel (``engine="native"`` requires it)."""
    if config.engine == "native" and not native.available():
        raise RuntimeError(
            "the compiled guided filter is not built (reinstall sss-rt with a C compiler)"
        )
    return config.engine == "native" or (config.engine == "auto" and native.available())


class BandFilter(abc.ABC):
    """The color guided filter over one band of rows (see the module docstring)."""

    b0: int
    b1: int

    @abc.abstractmethod
    def filter(
        self,
        src: np.ndarray,
        y0: int = 0,
        y1: int | None = None,
        out: np.ndarray | None = None,
        coefficients: bool = False,
    ) -> np.ndarray:
        """Filtered rows ``y0:y1`` (relative to the band) of C×(b1−b0)×W ``src``, as
        C×(y1−y0)×W float32; with ``coefficients``, the window means of a₀, a₁, a₂ and b
        instead, 4×C×(y1−y0)×W (the output is Σᵢ mean(aᵢ)·Iᵢ + mean(b))."""


class NativeBandFilter(BandFilter):
    def __init__(self, tables: native.PackedGuide, b0: int, b1: int, threads: int | None):
        self.tables, self.b0, self.b1 = tables, b0, b1
        self._rf = native.RowFilter(tables, threads)

    def filter(self, src, y0=0, y1=None, out=None, coefficients=False):
        return self._rf.filter(src, y0, y1, out, coefficients)


class NumpyBandFilter(BandFilter):
    def __init__(self, stats: GuideStats, b0: int, b1: int, chunk: int):
        self.stats, self.b0, self.b1, self.chunk = stats, b0, b1, chunk

    def filter(self, src, y0=0, y1=None, out=None, coefficients=False):
        c, n, w = src.shape
        y1 = n if y1 is None else y1
        stats = self.stats
        if (y0, y1) != (0, n):  # only the rows asked, with the 2r rows of context they need
            a, b = max(0, y0 - 2 * stats.radius), min(n, y1 + 2 * stats.radius)
            stats, src, y0, y1 = _crop_stats(stats, a, b), src[:, a:b], y0 - a, y1 - a
        lead = (4,) if coefficients else ()
        if out is None:
            out = np.empty((*lead, c, y1 - y0, w), np.float32)
        for start in range(0, c, self.chunk):
            stop = min(start + self.chunk, c)
            chunk = np.ascontiguousarray(np.moveaxis(src[start:stop], 0, -1), dtype=np.float32)
            if coefficients:
                for i, plane in enumerate(coefficient_means(stats, chunk)):
                    out[i, start:stop] = np.moveaxis(plane[y0:y1], -1, 0)
            else:
                out[start:stop] = np.moveaxis(guided_filter(stats, chunk)[y0:y1], -1, 0)
        return out


def band_filter(
    guide: np.ndarray,
    b0: int,
    b1: int,
    config: PostprocessConfig,
    *,
    radius: int | None = None,
    reuse: bool = False,
) -> BandFilter:
    """The filter of rows ``b0:b1`` of the H×W×3 float32 ``guide`` with ``config``'s engine,
    ε and radius (``radius`` overrides it, e.g. on a subsampled grid). ``reuse``: keep the
    compiled engine's whole-image tables between calls (``sss_rt.scratch``)."""
    h, w, _ = guide.shape
    r = config.radius if radius is None else radius
    s0, s1 = max(0, b0 - r), min(h, b1 + r)
    part = guide[s0:s1]
    if use_native(config):
        out = None
        if reuse and (s0, s1) == (b0, b1):
            n = b1 - b0
            out = (
                scratch.array("guide.pixel", (n, w, 4), np.float64),
                scratch.array("guide.coef", (n, w, 10), np.float64),
            )
        tables = native.PackedGuide.compute(part, r, config.eps, config.threads, out)
        if (s0, s1) != (b0, b1):
            tables = tables.rows(b0 - s0, b1 - s0)
        return NativeBandFilter(tables, b0, b1, config.threads)
    stats = guide_stats(part, r, config.eps)
    if (s0, s1) != (b0, b1):
        stats = _crop_stats(stats, b0 - s0, b1 - s0)
    return NumpyBandFilter(stats, b0, b1, config.chunk)


def _crop_stats(stats: GuideStats, a: int, b: int) -> GuideStats:
    """Rows a:b of the statistics, their own window sums truncated at the crop (so rows within
    2r of a cut edge are the caller's halo)."""
    window_mean, inv_count = truncated_mean(stats.radius, (b - a, stats.guide.shape[1]))
    return GuideStats(
        np.ascontiguousarray(stats.guide[a:b]),
        np.ascontiguousarray(stats.mean[a:b]),
        np.ascontiguousarray(stats.inv_cov[a:b]),
        window_mean,
        stats.radius,
        inv_count,
    )


def filter_channels(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig
) -> np.ndarray:
    """Every channel of C×H×W features guided-filtered by the H×W×3 RGB image: H×W×C float32
    (all of them held: for inspection and tests; the modes read bands)."""
    h, w = features.shape[1:]
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[:2]} but features are {(h, w)}")
    filt = band_filter(image_to_guide(image), 0, h, config)
    return np.moveaxis(filt.filter(np.ascontiguousarray(features, dtype=np.float32)), 0, -1)
