"""CPU post-processing: guided filter of every channel, per-image PCA, [0, 1] normalization."""

from __future__ import annotations

import numpy as np

from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guided_filter import guide_stats, guided_filter
from sss_rt.postprocess.pca import PCABasis, basis_from_moments, normalize_unit

_BLOCK_PIXELS = 1 << 16


def image_to_guide(image: np.ndarray) -> np.ndarray:
    """uint8 RGB H×W×3 → float32 guide in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"guide image must be H×W×3, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def filter_channels(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig
) -> np.ndarray:
    """Guided-filter C×H×W features with the RGB image as guide; returns H×W×C float32."""
    c, h, w = features.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[:2]} but features are {(h, w)}")
    stats = guide_stats(image_to_guide(image), config.radius, config.eps)
    out = np.empty((h, w, c), np.float32)
    for start in range(0, c, config.chunk):
        stop = min(start + config.chunk, c)
        chunk = np.ascontiguousarray(np.moveaxis(features[start:stop], 0, -1), dtype=np.float32)
        out[..., start:stop] = guided_filter(stats, chunk)
    return out


def fit_basis(pixels: np.ndarray, n_components: int) -> PCABasis:
    """Centred PCA of (N, C) float32 vectors; the Gram is accumulated blockwise in float64."""
    n, c = pixels.shape
    total = pixels.sum(axis=0, dtype=np.float64)
    shift = (total / n).astype(np.float32)
    gram = np.zeros((c, c), np.float64)
    for start in range(0, n, _BLOCK_PIXELS):
        block = pixels[start : start + _BLOCK_PIXELS] - shift
        gram += (block.T @ block).astype(np.float64)
    # moments about the shift → moments about zero, as basis_from_moments expects
    shift64 = shift.astype(np.float64)
    centred_total = total - n * shift64
    gram += np.outer(centred_total, shift64) + np.outer(shift64, centred_total)
    gram += n * np.outer(shift64, shift64)
    return basis_from_moments(total, gram, n, n_components)


def to_unit_embedding(projected: np.ndarray, basis: PCABasis, shape: tuple[int, int]) -> np.ndarray:
    """Projected (N, k) values → H×W×k in [0, 1]; round-off-level components become 0."""
    embedding = normalize_unit(projected, basis.degenerate())
    return embedding.reshape(*shape, projected.shape[1])


def postprocess(
    features: np.ndarray, image: np.ndarray, config: PostprocessConfig | None = None
) -> tuple[np.ndarray, PCABasis]:
    """C×H×W features + H×W×3 uint8 RGB image → (H×W×k float32 in [0, 1], PCA basis)."""
    config = config or PostprocessConfig()
    if features.ndim != 3:
        raise ValueError(f"features must be C×H×W, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or Inf; the model output is invalid")
    c, h, w = features.shape
    filtered = filter_channels(features, image, config).reshape(h * w, c)
    basis = fit_basis(filtered, config.n_components)
    projected = basis.project(filtered)
    return to_unit_embedding(projected, basis, (h, w)), basis
