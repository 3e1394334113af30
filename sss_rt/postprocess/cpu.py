"""CPU post-processing: guided filter of every channel, per-image PCA, [0, 1] normalization.

Exact mode with the compiled kernel streams bands of rows: each band of the 128 filtered
channels is folded into the covariance and dropped, then the 3-d output is obtained by filtering
the raw features projected on the PCA basis (the filter is linear for a fixed guide), so the
filtered channels are never held in full.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np

from sss_rt.postprocess import native, scratch
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guided_filter import (
    GuideStats,
    coefficient_means,
    filter_at,
    guide_stats,
    guided_filter,
)
from sss_rt.postprocess.pca import PCABasis, basis_from_moments, normalize_unit

_BLOCK_PIXELS = 1 << 14
# the fast mode's [0, 1] range comes from the exact filter at this many of its most extreme
# pixels per side and dimension
_EXTREME_PIXELS = 8


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


class MomentAccumulator:
    """Σx and Σxxᵀ of C-dim float32 vectors, accumulated in float64 about a fixed shift.

    The products are float64 (a float32 GEMM loses the weak directions whenever one direction
    dominates the spread, as it often does for these features); shifting by a value near the
    mean avoids cancellation. The compiled kernel computes both sums in one pass; without it,
    one GEMM per block does (the block carries a row of ones, so the last row of its Gram is Σx).
    """

    def __init__(self, shift: np.ndarray, compiled: bool | None = None):
        """``compiled``: use the compiled kernel (default: when it is built)."""
        self.compiled = native.available() and compiled is not False
        self.shift = np.asarray(shift, np.float64)
        c = self.shift.shape[0]
        self._moments = np.zeros((c + 1, c + 1), np.float64)
        self.count = 0

    @property
    def total(self) -> np.ndarray:
        return self._moments[-1, :-1]

    @property
    def gram(self) -> np.ndarray:
        return self._moments[:-1, :-1]

    def add_moments(self, total: np.ndarray, gram: np.ndarray, count: int) -> None:
        """Add sums computed elsewhere (e.g. on a GPU): Σ(x − shift), Σ(x − shift)(x − shift)ᵀ."""
        self._moments[-1, :-1] += total
        self._moments[:-1, -1] += total
        self._moments[:-1, :-1] += gram
        self._moments[-1, -1] += count
        self.count += count

    def add_columns(self, q: np.ndarray, threads: int | None = None) -> None:
        """Add the columns of C×n ``q``."""
        c, n = q.shape
        if self.compiled:
            total, gram = native.moments(q, self.shift, threads)
            self.add_moments(total, gram, n)
            return
        block = min(n, _BLOCK_PIXELS)
        buf = np.empty((c + 1, block), np.float64)
        buf[c] = 1.0
        for start in range(0, n, block):
            stop = min(n, start + block)
            b = buf[:, : stop - start]
            np.copyto(b[:c], q[:, start:stop])
            b[:c] -= self.shift[:, None]
            self._moments += b @ b.T
        self.count += n

    def basis(self, n_components: int) -> PCABasis:
        """The PCA basis of the vectors added; ValueError if any of them was NaN or Inf (they
        make the sums non-finite, so the inputs need no separate scan)."""
        if not np.isfinite(self._moments).all():
            raise ValueError("features contain NaN or Inf; the model output is invalid")
        # moments about the shift → moments about zero, as basis_from_moments expects
        s, n = self.shift, self.count
        total = self.total + n * s
        gram = self.gram + np.outer(self.total, s) + np.outer(s, self.total) + n * np.outer(s, s)
        return basis_from_moments(total, gram, n, n_components)


def fit_basis(pixels: np.ndarray, n_components: int, compiled: bool | None = None) -> PCABasis:
    """Centred PCA of (N, C) float32 vectors; the Gram is accumulated in float64."""
    acc = MomentAccumulator(pixels.mean(axis=0, dtype=np.float64), compiled)
    acc.add_columns(np.asarray(pixels, np.float32).T)
    return acc.basis(n_components)


def filter_channels(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig
) -> np.ndarray:
    """Guided-filter C×H×W features with the RGB image as guide; returns H×W×C float32."""
    h, w = features.shape[1:]
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[:2]} but features are {(h, w)}")
    return filter_with_stats(
        features, guide_stats(image_to_guide(image), config.radius, config.eps), config
    )


def filter_with_stats(
    features: np.ndarray, stats: GuideStats, config: PostprocessConfig
) -> np.ndarray:
    """Guided-filter C×H×W features with precomputed guide statistics; H×W×C float32."""
    c, h, w = features.shape
    if use_native(config):
        with native.RowFilter(native.PackedGuide.from_stats(stats), config.threads) as rf:
            return np.moveaxis(rf.filter(features), 0, -1)
    out = np.empty((h, w, c), np.float32)
    for start in range(0, c, config.chunk):
        stop = min(start + config.chunk, c)
        chunk = np.ascontiguousarray(np.moveaxis(features[start:stop], 0, -1), dtype=np.float32)
        out[..., start:stop] = guided_filter(stats, chunk)
    return out


def to_unit_embedding(
    projected: np.ndarray,
    basis: PCABasis,
    shape: tuple[int, int],
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Projected (N, k) values → H×W×k in [0, 1] (by their own min and max, or by ``bounds``
    with clipping); round-off-level components become 0."""
    embedding = normalize_unit(projected, basis.degenerate(), bounds)
    return embedding.reshape(*shape, projected.shape[1])


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
    features: np.ndarray,
    basis: PCABasis,
    config: PostprocessConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension min and max of the exact filter's output, evaluated at the pixels where
    the fast mode's k×H×W ``projected`` output is most extreme.

    The fast filter overshoots at a few sharp edges (its coefficients are smooth, the guide is
    not); normalizing by its own extremes would carry that into every pixel.
    """
    pixels = extreme_pixels(projected, _EXTREME_PIXELS)
    components, mean = basis.components, basis.mean

    def crop(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        block = features[:, y0:y1, x0:x1].reshape(features.shape[0], -1)
        values = components @ (block.astype(np.float64) - mean[:, None])
        return values.astype(np.float32).reshape(-1, y1 - y0, x1 - x0)

    values = filter_at(guide, crop, pixels, config.radius, config.eps)
    return values.min(axis=0), values.max(axis=0)


@contextmanager
def _timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    if timings is not None:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0


def _check(features: np.ndarray, image: np.ndarray) -> None:
    # NaN and Inf are caught by the PCA's sums (MomentAccumulator.basis), which every input
    # value reaches, instead of by a scan of the whole feature array
    if features.ndim != 3:
        raise ValueError(f"features must be C×H×W, got shape {features.shape}")
    if image.shape[:2] != features.shape[1:]:
        raise ValueError(f"image is {image.shape[:2]} but features are {features.shape[1:]}")


def _check_finite(features: np.ndarray) -> None:
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or Inf; the model output is invalid")


def project_raw(
    features: np.ndarray, basis: PCABasis, shift: np.ndarray, threads: int | None = None
) -> np.ndarray:
    """Unfiltered C×H×W features minus ``shift``, projected on the basis: k×H×W float32.

    Products in float64, for the same reason as the covariance's.
    """
    if native.available():
        return native.project(features, basis.components, shift, threads)
    c, h, w = features.shape
    flat = features.reshape(c, h * w)
    out = np.empty((basis.components.shape[0], h * w), np.float32)
    for start in range(0, h * w, _BLOCK_PIXELS):
        block = flat[:, start : start + _BLOCK_PIXELS].astype(np.float64)
        block -= shift[:, None]
        out[:, start : start + _BLOCK_PIXELS] = basis.components @ block
    return out.reshape(-1, h, w)


def rough_mean(features: np.ndarray) -> np.ndarray:
    """Per-channel mean of C×H×W features on a sparse pixel grid: a shift that conditions the
    float64 moments (it need not be the exact mean)."""
    _c, h, w = features.shape
    step = max(1, int(np.sqrt(h * w / 4096)))
    return features[:, ::step, ::step].mean(axis=(1, 2), dtype=np.float64)


def _exact_native(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig, timings=None
) -> tuple[np.ndarray, PCABasis]:
    c, h, w = features.shape
    with _timed(timings, "guided_filter"):
        reused = (
            scratch.array("exact.guide.pixel", (h, w, 4), np.float64),
            scratch.array("exact.guide.coef", (h, w, 10), np.float64),
        )
        tables = native.PackedGuide.compute(
            image_to_guide(image), config.radius, config.eps, config.threads, reused
        )
        rf = native.RowFilter(tables, config.threads)
    with _timed(timings, "pca"):
        shift = rough_mean(features)
        acc = MomentAccumulator(shift)
    rows = int(np.clip((config.band_mb << 20) // max(c * w * 4, 1), 1, h))
    band = scratch.array("exact.band", (c * rows * w,), np.float32)
    with rf:
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            out = band[: c * (y1 - y0) * w].reshape(c, y1 - y0, w)
            with _timed(timings, "guided_filter"):
                rf.filter(features, y0, y1, out)
            with _timed(timings, "pca"):
                acc.add_columns(out.reshape(c, -1), config.threads)
        del band
        with _timed(timings, "pca"):
            basis = acc.basis(config.n_components)
            # filter(V·(p − s)) = V·(filter(p) − s): the filter is linear and keeps constants
            raw = project_raw(features, basis, shift, config.threads)
            projected = rf.filter(raw).reshape(-1, h * w).T
            projected = projected - (basis.components @ (basis.mean - shift)).astype(np.float32)
    with _timed(timings, "normalize"):
        return to_unit_embedding(projected, basis, (h, w)), basis


def _exact_numpy(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig, timings=None
) -> tuple[np.ndarray, PCABasis]:
    c, h, w = features.shape
    with _timed(timings, "guided_filter"):
        filtered = filter_channels(features, image, config).reshape(h * w, c)
    with _timed(timings, "pca"):
        basis = fit_basis(filtered, config.n_components, compiled=False)
        projected = basis.project(filtered)
    with _timed(timings, "normalize"):
        return to_unit_embedding(projected, basis, (h, w)), basis


def _fast(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig
) -> tuple[np.ndarray, PCABasis]:
    """He & Sun's fast guided filter; the covariance comes from the subsampled grid."""
    c, h, w = features.shape
    s = config.subsample
    low = (max(1, -(-w // s)), max(1, -(-h // s)))  # cv2 order: (width, height)
    guide = image_to_guide(image)
    guide_low = cv2.resize(guide, low, interpolation=cv2.INTER_AREA).reshape(low[1], low[0], 3)
    radius_low = max(1, round(config.radius / s)) if config.radius > 0 else 0
    low_cfg = PostprocessConfig(
        radius=radius_low, eps=config.eps, engine=config.engine, threads=config.threads
    )

    compiled = use_native(low_cfg)
    feats_low = _shrink_planes(features, low, config.threads, compiled)
    # area averaging is linear: projecting the subsampled features equals subsampling the
    # projected ones, at 1/s² of the cost
    if compiled:
        tables = native.PackedGuide.compute(guide_low, radius_low, config.eps, config.threads)
        with native.RowFilter(tables, config.threads) as rf:
            acc = MomentAccumulator(rough_mean(feats_low))
            acc.add_columns(rf.filter(feats_low).reshape(c, -1), config.threads)
            basis = acc.basis(config.n_components)
            proj_low = project_raw(feats_low, basis, basis.mean, config.threads)
            means = rf.filter(proj_low, coefficients=True)  # 4×k×h×w
        projected = native.apply_upsampled(means, guide, config.threads)
    else:
        stats = guide_stats(guide_low, radius_low, config.eps)
        basis = fit_basis(
            filter_with_stats(feats_low, stats, low_cfg).reshape(-1, c),
            config.n_components,
            compiled=False,
        )
        proj_low = np.moveaxis(project_raw(feats_low, basis, basis.mean, config.threads), 0, -1)
        means = np.moveaxis(
            np.stack(coefficient_means(stats, np.ascontiguousarray(proj_low))), -1, 1
        )
        projected = _apply_upsampled(means, guide)
    bounds = exact_bounds(projected, guide, features, basis, config)
    return to_unit_embedding(projected.reshape(-1, h * w).T, basis, (h, w), bounds), basis


def _apply_upsampled(means: np.ndarray, guide: np.ndarray) -> np.ndarray:
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


def _shrink_planes(
    planes: np.ndarray, size: tuple[int, int], threads: int | None, compiled: bool
) -> np.ndarray:
    """Area-average C×H×W planes to ``size`` (cv2 order), planes spread over threads."""
    _c, h, w = planes.shape
    s = h // size[1]
    if compiled and size == (w // s, h // s) and h % s == 0 and w % s == 0:
        return native.shrink(planes, s, threads)  # whole blocks: the compiled box mean
    out = np.empty((planes.shape[0], size[1], size[0]), np.float32)

    def part(a: int, b: int) -> None:
        for i in range(a, b):
            cv2.resize(planes[i], size, dst=out[i], interpolation=cv2.INTER_AREA)

    native.split(planes.shape[0], threads or native.default_threads(), part)
    return out


def postprocess(
    features: np.ndarray,
    image: np.ndarray,
    config: PostprocessConfig | None = None,
    *,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, PCABasis]:
    """C×H×W features + H×W×3 uint8 RGB image → (H×W×k float32 in [0, 1], PCA basis).

    ``timings``, if given, receives seconds per stage (guided_filter, pca, normalize) of the
    exact mode.
    """
    config = config or PostprocessConfig()
    _check(features, image)
    features = np.ascontiguousarray(features, dtype=np.float32)
    if config.mode == "matlab":  # its clamp would turn Inf into a valid value
        from sss_rt.postprocess.matlab import postprocess_matlab

        _check_finite(features)

        return postprocess_matlab(features, image, config)
    # NaN/Inf inputs surface as non-finite PCA sums (a ValueError), not as NumPy warnings
    with np.errstate(invalid="ignore", over="ignore"):
        if config.mode == "fast":
            return _fast(features, image, config)
        if use_native(config):
            return _exact_native(features, image, config, timings)
        return _exact_numpy(features, image, config, timings)
