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

from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guided_filter import guide_stats, guided_filter
from sss_rt.postprocess.pca import PCABasis

CLAMP = 5.0
BOX = 10
EPS = 0.01
# MATLAB's filter centre for an even size n is floor((n + 1) / 2) (1-based): offsets −4 … +5
_ANCHOR = ((BOX + 1) // 2 - 1,) * 2


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
    n_triples = c // 3
    for k in range(3):
        idx = np.arange(n_triples) * 3 + k
        if len(idx):
            src = np.ascontiguousarray(feats[..., idx])
            out[..., idx] = grey_guided_filter(np.ascontiguousarray(guide[..., k]), src)
    rest = np.arange(n_triples * 3, c)
    if len(rest):
        stats = guide_stats(guide, 0, EPS, window_mean=window_mean)
        out[..., rest] = guided_filter(stats, np.ascontiguousarray(feats[..., rest]))
    return out


def postprocess_matlab(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig
) -> tuple[np.ndarray, PCABasis]:
    """MATLAB-compatible C×H×W → H×W×k in [0, 1]."""
    from sss_rt.postprocess.cpu import fit_basis, to_unit_embedding

    c, h, w = features.shape
    filtered = filter_matlab(features, image).reshape(h * w, c)
    basis = fit_basis(filtered, config.n_components)
    return to_unit_embedding(basis.project(filtered), basis, (h, w)), basis
