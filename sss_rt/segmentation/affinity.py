"""The affinities of Semantic Soft Segmentation and their Laplacian.

All on the image in [0, 1] (H×W×3, float64) and its 3-d features:

- matting Laplacian (Levin et al., closed-form matting): 3×3 windows inside the image, each
  contributing (1 + (I_i − μ)ᵀ(Σ + ε/9·U)⁻¹(I_j − μ)) / 9 to the affinity of every pair of its
  pixels, ε = 1e-7;
- semantic affinity between adjacent superpixels, at their centroid pixels:
  erf(20·(1 − ‖f̄_i − f̄_j‖ − 0.85)) (negative for dissimilar neighbours), weight 0.01;
- non-local colour affinity between superpixels whose centroids (y/H, x/W) are within 0.2:
  (erf(50·(1 − ‖c̄_i − c̄_j‖ − 0.95)) + 1) / 2, weight 0.01.

Each is a symmetric sparse W; :func:`laplacian` is D − W with D its row sums.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import erf

from sss_rt.segmentation.superpixels import Superpixels

MATTING_EPS = 1e-7
SEMANTIC_WEIGHT = 0.01
COLOR_WEIGHT = 0.01
COLOR_RADIUS = 0.2


def laplacian(w: sp.spmatrix) -> sp.csr_matrix:
    """D − W of a symmetric affinity matrix."""
    w = sp.csr_matrix(w)
    return (sp.diags(np.asarray(w.sum(axis=1)).ravel()) - w).tocsr()


def matting_affinity(image: np.ndarray, eps: float = MATTING_EPS) -> sp.csr_matrix:
    """The closed-form matting affinity W (N×N, N = H·W) of 3×3 windows; its Laplacian D − W
    is Levin's matting Laplacian (each window's rows of W sum to 1)."""
    img = np.asarray(image, np.float64)
    h, w, c = img.shape
    if h < 3 or w < 3:
        return sp.csr_matrix((h * w, h * w))
    idx = np.arange(h * w).reshape(h, w)
    # the 9 pixels of each window, windows centred on interior pixels
    win = np.stack(
        [idx[dy : h - 2 + dy, dx : w - 2 + dx].ravel() for dy in range(3) for dx in range(3)],
        axis=1,
    )  # (n, 9)
    vals = img.reshape(-1, c)[win]  # (n, 9, 3)
    mu = vals.mean(axis=1, keepdims=True)
    x = vals - mu
    cov = np.einsum("nki,nkj->nij", x, x) / 9.0
    inv = np.linalg.inv(cov + (eps / 9.0) * np.eye(c))
    aff = (1.0 + np.einsum("nki,nij,nlj->nkl", x, inv, x)) / 9.0  # (n, 9, 9)
    rows = np.repeat(win, 9, axis=1).ravel()
    cols = np.tile(win, (1, 9)).ravel()
    out = sp.coo_matrix((aff.ravel(), (rows, cols)), shape=(h * w, h * w)).tocsr()
    out = ((out + out.T) * 0.5).tocsr()  # symmetric to the last bit (the sums' order differs)
    out.setdiag(0)  # the diagonal cancels in D − W
    out.eliminate_zeros()
    return out


def _at_centroids(sp_: Superpixels, pairs: np.ndarray, values: np.ndarray, n: int):
    a = sp_.centroid_pixel[pairs[:, 0]]
    b = sp_.centroid_pixel[pairs[:, 1]]
    keep = a != b
    a, b, v = a[keep], b[keep], values[keep]
    return sp.coo_matrix(
        (np.concatenate([v, v]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n)
    ).tocsr()


def semantic_affinity(sp_: Superpixels, n: int) -> sp.csr_matrix:
    """erf(20·(1 − ‖f̄_i − f̄_j‖ − 0.85)) between adjacent superpixels, at centroid pixels."""
    pairs = sp_.adjacent
    d = np.linalg.norm(sp_.mean_feature[pairs[:, 0]] - sp_.mean_feature[pairs[:, 1]], axis=1)
    return _at_centroids(sp_, pairs, erf(20.0 * (1.0 - d - 0.85)), n)


def color_affinity(sp_: Superpixels, n: int, radius: float = COLOR_RADIUS) -> sp.csr_matrix:
    """(erf(50·(1 − ‖c̄_i − c̄_j‖ − 0.95)) + 1)/2 between superpixels whose centroids are
    within ``radius`` (coordinates divided by H and W), at centroid pixels."""
    from scipy.spatial import cKDTree

    tree = cKDTree(sp_.centroid_yx)
    pairs = tree.query_pairs(radius, output_type="ndarray")
    if len(pairs) == 0:
        return sp.csr_matrix((n, n))
    d = np.linalg.norm(sp_.mean_color[pairs[:, 0]] - sp_.mean_color[pairs[:, 1]], axis=1)
    return _at_centroids(sp_, pairs, (erf(50.0 * (1.0 - d - 0.95)) + 1.0) / 2.0, n)


def segmentation_laplacian(image: np.ndarray, sp_: Superpixels) -> sp.csr_matrix:
    """L = D − W of W = matting + 0.01·semantic + 0.01·colour (symmetric, CSR, float64)."""
    n = image.shape[0] * image.shape[1]
    w = (
        matting_affinity(image)
        + SEMANTIC_WEIGHT * semantic_affinity(sp_, n)
        + COLOR_WEIGHT * color_affinity(sp_, n)
    )
    return laplacian(w)
