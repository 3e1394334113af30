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

from sss_rt.segmentation import native
from sss_rt.segmentation.superpixels import Superpixels

MATTING_EPS = 1e-7
SEMANTIC_WEIGHT = 0.01
COLOR_WEIGHT = 0.01
COLOR_RADIUS = 0.2


def laplacian(w: sp.spmatrix) -> sp.csr_matrix:
    """D − W of a symmetric affinity matrix."""
    w = sp.csr_matrix(w)
    return (sp.diags(np.asarray(w.sum(axis=1)).ravel()) - w).tocsr()


#: the offsets (dy, dx) from a pixel to the later pixels it shares a 3×3 window with, in
#: row-major order; the earlier ones are their mirror images
_LATER = [(dy, dx) for dy in range(3) for dx in range(-2, 3) if (dy, dx) > (0, 0)]


def matting_affinity(
    image: np.ndarray, eps: float = MATTING_EPS, compiled: bool | None = None
) -> sp.csr_matrix:
    """The closed-form matting affinity W (N×N, N = H·W) of 3×3 windows; its Laplacian D − W
    is Levin's matting Laplacian (each window's rows of W sum to 1).

    Every pixel's row holds the pixels within two rows and columns of it (any two of them share
    a window of the image), in column order; W is exactly symmetric. With the compiled kernel
    (:func:`native.matting_affinity`; ``compiled=False`` forces NumPy's) each pair's sum over
    its windows is computed once, rows over threads: at 640×480 0.07–0.2 s against NumPy's
    0.7–1.8 s. NumPy's: each window's 9×9 block is added into one H×W plane per offset between
    its pixels — 12 later offsets, the earlier 12 their mirror images — and the CSR arrays are
    written from the planes (where a COO matrix of every window's 81 entries, summed and
    symmetrized by SciPy, took 3.5–3.9 s)."""
    img = np.asarray(image, np.float64)
    h, w, c = img.shape
    n = h * w
    if h < 3 or w < 3:
        return sp.csr_matrix((n, n))
    if compiled is not False and native.available() and c == 3:
        return native.matting_affinity(img, eps)
    # the 9 pixels of each window (windows by top-left corner, (h−2)·(w−2) of them), centred
    vals = np.stack(
        [
            img[dy : h - 2 + dy, dx : w - 2 + dx].reshape(-1, c)
            for dy in range(3)
            for dx in range(3)
        ],
        axis=1,
    )  # (windows, 9, c)
    x = vals - vals.mean(axis=1, keepdims=True)
    inv = np.linalg.inv(np.matmul(x.transpose(0, 2, 1), x) / 9.0 + (eps / 9.0) * np.eye(c))
    y = np.ascontiguousarray(np.matmul(x, inv).transpose(1, 2, 0))  # (9, c, windows)
    x = np.ascontiguousarray(x.transpose(1, 2, 0))
    # plane (dy, dx) at pixel (y, x): W between (y, x) and (y + dy, x + dx), the sum over the
    # windows holding both of (1 + (I_a − μ)ᵀ(Σ + ε/9·U)⁻¹(I_b − μ)) / 9
    slot = {off: j for j, off in enumerate(_LATER)}
    planes = np.zeros((len(_LATER), h, w))
    for a in range(9):
        ky, kx = divmod(a, 3)
        for b in range(9):
            off = (b // 3 - ky, b % 3 - kx)
            if off in slot:
                term = np.einsum("cn,cn->n", y[a], x[b])
                term += 1.0
                term /= 9.0
                planes[slot[off], ky : ky + h - 2, kx : kx + w - 2] += term.reshape(h - 2, w - 2)
    # row p: the earlier neighbours (W[p, p − o] = plane o at p − o), then the later ones
    offsets = [(-dy, -dx) for dy, dx in reversed(_LATER)] + _LATER
    values = np.zeros((h, w, len(offsets)))  # 0 where the neighbour is outside the image
    for j, (dy, dx) in enumerate(offsets):
        y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        if j < len(_LATER):
            values[y0:y1, x0:x1, j] = planes[slot[(-dy, -dx)], y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        else:
            values[y0:y1, x0:x1, j] = planes[slot[(dy, dx)], y0:y1, x0:x1]
    values = values.reshape(n, len(offsets))
    # pairs outside the image stay 0, and SciPy's sum would drop an exact zero too
    keep = np.flatnonzero(values)
    shift = np.array([dy * w + dx for dy, dx in offsets], np.int32)
    cols = keep // len(offsets) + shift[keep % len(offsets)]
    indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(values, axis=1))])
    out = sp.csr_matrix((values.ravel()[keep], cols.astype(np.int32), indptr), shape=(n, n))
    if w < 5:  # row-major offsets are in column order only where a row is ≥ 5 wide
        out.has_sorted_indices = False
        out.sort_indices()
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
