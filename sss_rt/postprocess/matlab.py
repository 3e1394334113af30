"""The authors' MATLAB pre-processing (``preprocessFeatures.m``), reproduced rule by rule.

1. Features clamped to [−5, 5].
2. ``imguidedfilter`` with NeighborhoodSize 10 and DegreeOfSmoothing 0.01, guide in [0, 1]:
   an even 10×10 box (MATLAB's centre rule: offsets −4 … +5) with replicate padding, each box
   mean divided by 100. Channels go in triples (0–2, 3–5, …) with the RGB image as guide,
   which MATLAB treats channel-wise: channel 3j+k is filtered with guide channel k alone (the
   grey guided filter). The last C mod 3 channels go one at a time with the color guided filter.
3. Centred PCA of the filtered channels, top components, the project's deterministic signs.
4. Each component min–max normalized to [0, 1] over the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from sss_rt.bands import FeatureSource, project
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guided_filter import guide_stats, guided_filter
from sss_rt.postprocess.moments import MomentAccumulator, fit_basis
from sss_rt.postprocess.pca import PCABasis, to_unit_embedding
from sss_rt.timing import timed

CLAMP = 5.0
BOX = 10
EPS = 0.01
# MATLAB's filter centre for an even size n is floor((n + 1) / 2) (1-based): offsets −4 … +5
_ANCHOR = ((BOX + 1) // 2 - 1,) * 2
#: rows a band reads beyond its own on each side: the filter's two boxes reach 2 × 5 rows
HALO = 2 * max(_ANCHOR[0], BOX - 1 - _ANCHOR[0])


def window_mean(x: np.ndarray) -> np.ndarray:
    """10×10 box mean, replicate padding, MATLAB's centre for even sizes (H×W[×C], C ≤ 512)."""
    out = cv2.boxFilter(
        x, -1, (BOX, BOX), anchor=_ANCHOR, normalize=True, borderType=cv2.BORDER_REPLICATE
    )
    return out.reshape(x.shape)


def grey_guided_filter(guide: np.ndarray, src: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Guided filter of H×W×C channels with one H×W grey guide (same window for all)."""
    i = guide[..., None]
    mean_i = window_mean(guide)[..., None]
    var_i = window_mean(guide * guide)[..., None] - mean_i * mean_i
    mean_p = window_mean(src)
    cov = window_mean(np.ascontiguousarray(i * src)) - mean_i * mean_p
    a = cov / (var_i + eps)
    b = mean_p - a * mean_i
    return window_mean(np.ascontiguousarray(a)) * i + window_mean(np.ascontiguousarray(b))


def filter_matlab(features: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Clamp and filter C×H×W features as the MATLAB code does; returns H×W×C float32."""
    c, h, w = features.shape
    guide = image.astype(np.float32) / np.float32(255.0)
    feats = np.clip(np.moveaxis(features, 0, -1), -CLAMP, CLAMP).astype(np.float32)
    out = np.empty((h, w, c), np.float32)
    for idx, channel in _groups(c):
        out[..., idx] = _filter_group(guide, np.ascontiguousarray(feats[..., idx]), channel)
    return out


def _groups(c: int) -> list[tuple[np.ndarray, int | None]]:
    """The channel groups that share a filter: (channel indices, grey guide channel), the
    colour-filtered rest with ``None``."""
    n_triples = c // 3
    groups: list[tuple[np.ndarray, int | None]] = [
        (np.arange(n_triples) * 3 + k, k) for k in range(3) if n_triples
    ]
    rest = np.arange(n_triples * 3, c)
    if len(rest):
        groups.append((rest, None))
    return groups


def _filter_group(guide: np.ndarray, src: np.ndarray, channel: int | None) -> np.ndarray:
    """One group's filter of H×W×C' clamped channels (see the module docstring)."""
    if channel is not None:
        return grey_guided_filter(np.ascontiguousarray(guide[..., channel]), src)
    stats = guide_stats(guide, 0, EPS, window_mean=window_mean)
    return guided_filter(stats, src)


def run(
    source: FeatureSource,
    image: np.ndarray,
    config: PostprocessConfig,
    keep_features: bool = False,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, PCABasis, FeatureSource]:
    """MATLAB-compatible C×H×W → H×W×k in [0, 1], in bands of rows.

    Each band carries a halo of ``HALO`` rows (two 10×10 boxes reach 5 rows down and 4 up
    each), so the replicate padding only ever applies at the image's own edges. An image that
    fits in one band is filtered once and its filtered channels projected; otherwise the second
    pass filters, per filter group, the clamped channels projected on the basis (the filters
    are linear and keep constants), which needs 3 channels per group instead of C.
    """
    c, h, w = source.shape
    k = config.n_components
    if keep_features and not source.in_memory:
        with timed(timings, "network"):
            source = source.materialize()
    guide = image.astype(np.float32) / np.float32(255.0)
    rows = max(4 * HALO, int((config.band_mb << 20) // max(1, c * w * 4 * 4)))
    if rows >= h:  # one band: the filtered channels are projected directly
        with timed(timings, "network"):
            feats = source.rows(0, h)
        with timed(timings, "guided_filter"):
            filtered = filter_matlab(feats, image).reshape(h * w, c)
        with timed(timings, "pca"):
            basis = fit_basis(filtered, k)
            projected = basis.project(filtered)
        with timed(timings, "normalize"):
            return to_unit_embedding(projected, basis, (h, w)), basis, source

    def banded():
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            b0, b1 = max(0, y0 - HALO), min(h, y1 + HALO)
            with timed(timings, "network"):
                feats = source.rows(b0, b1)
            yield y0, y1, b0, b1, feats

    acc: MomentAccumulator | None = None
    for y0, y1, b0, b1, feats in banded():
        with timed(timings, "guided_filter"):
            out = filter_matlab(feats, image[b0:b1])[y0 - b0 : y1 - b0].reshape(-1, c)
        with timed(timings, "pca"):
            if acc is None:
                acc = MomentAccumulator(out.mean(axis=0, dtype=np.float64))
            acc.add_columns(np.ascontiguousarray(out.T), config.threads)
    assert acc is not None
    basis = acc.basis(k)
    comps, shift = basis.components, acc.shift
    projected = np.zeros((h, w, k), np.float32)
    for y0, y1, b0, b1, feats in banded():
        with timed(timings, "guided_filter"):
            clamped = np.clip(feats, -CLAMP, CLAMP)
            for idx, channel in _groups(c):
                proj = project(
                    np.ascontiguousarray(clamped[idx]), comps[:, idx], shift[idx], config.threads
                )
                out = _filter_group(guide[b0:b1], np.moveaxis(proj, 0, -1).copy(), channel)
                projected[y0:y1] += out[y0 - b0 : y1 - b0]
    with timed(timings, "normalize"):
        flat = projected.reshape(-1, k)
        flat -= (comps @ (basis.mean - shift)).astype(np.float32)
        return to_unit_embedding(flat, basis, (h, w)), basis, source
