"""Independent float64 NumPy implementations used as test oracles (written from the papers)."""

from __future__ import annotations

import numpy as np


def window_mean_naive(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)² window truncated at the border, by explicit loops (H×W[×C])."""
    h, w = x.shape[:2]
    out = np.empty(x.shape, np.float64)
    for i in range(h):
        for j in range(w):
            win = x[max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1]
            out[i, j] = win.reshape(-1, *x.shape[2:]).mean(axis=0)
    return out


def window_mean_integral(x: np.ndarray, r: int) -> np.ndarray:
    """The same truncated mean through integral images (for larger inputs)."""
    x = x.astype(np.float64)
    h, w = x.shape[:2]
    pad = np.zeros((h + 1, w + 1, *x.shape[2:]))
    pad[1:, 1:] = x.cumsum(0).cumsum(1)
    i0 = np.clip(np.arange(h) - r, 0, h)
    i1 = np.clip(np.arange(h) + r + 1, 0, h)
    j0 = np.clip(np.arange(w) - r, 0, w)
    j1 = np.clip(np.arange(w) + r + 1, 0, w)
    s = pad[i1][:, j1] - pad[i0][:, j1] - pad[i1][:, j0] + pad[i0][:, j0]
    n = ((i1 - i0)[:, None] * (j1 - j0)[None, :]).astype(np.float64)
    return s / n.reshape(h, w, *([1] * (x.ndim - 2)))


def color_guided_filter(guide: np.ndarray, p: np.ndarray, r: int, eps: float, mean=None):
    """He et al.'s color guided filter, float64, one H×W channel ``p``, guide H×W×3."""
    mean = mean or window_mean_integral
    guide = guide.astype(np.float64)
    p = p.astype(np.float64)
    mu = mean(guide, r)
    mp = mean(p, r)
    cov_ip = mean(guide * p[..., None], r) - mu * mp[..., None]
    sig = mean(guide[..., :, None] * guide[..., None, :], r) - mu[..., :, None] * mu[..., None, :]
    a = np.linalg.solve(sig + eps * np.eye(3), cov_ip[..., None])[..., 0]
    b = mp - (a * mu).sum(-1)
    return (mean(a, r) * guide).sum(-1) + mean(b, r)


def pca_reference(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred PCA by SVD of the centred data; rows signed so the largest |loading| is > 0."""
    x = x.astype(np.float64)
    xc = x - x.mean(0)
    _, _s, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:k]
    for row in comps:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    return comps, xc @ comps.T


def postprocess_reference(features_chw: np.ndarray, image: np.ndarray, r: int, eps: float, k=3):
    """Filter every channel, PCA to k dims, min-max normalize each dim: H×W×k float64."""
    guide = image.astype(np.float64) / 255.0
    c, h, w = features_chw.shape
    filtered = np.stack([color_guided_filter(guide, ch, r, eps) for ch in features_chw], -1)
    _, y = pca_reference(filtered.reshape(-1, c), k)
    y = (y - y.min(0)) / (y.max(0) - y.min(0))
    return y.reshape(h, w, k), filtered


def matlab_window_mean(x: np.ndarray, n: int = 10) -> np.ndarray:
    """n×n box mean with replicate padding; MATLAB's centre floor((n+1)/2) (1-based)."""
    x = x.astype(np.float64)
    before = (n + 1) // 2 - 1  # 4 for n = 10: offsets −4 … +5
    after = n - 1 - before
    pad = [(before, after), (before, after)] + [(0, 0)] * (x.ndim - 2)
    xp = np.pad(x, pad, mode="edge")
    h, w = x.shape[:2]
    out = np.zeros(x.shape, np.float64)
    for di in range(n):
        for dj in range(n):
            out += xp[di : di + h, dj : dj + w]
    return out / (n * n)


def matlab_preprocess_reference(features_chw: np.ndarray, image: np.ndarray, k: int = 3):
    """The MATLAB rules in float64: clamp, per-triple grey filters, color filter for the rest,
    centred PCA (SVD), per-dimension min-max. Returns (H×W×k, filtered H×W×C)."""
    guide = image.astype(np.float64) / 255.0
    feats = np.clip(features_chw.astype(np.float64), -5.0, 5.0)
    c, h, w = feats.shape
    filtered = np.empty((h, w, c))
    for ch in range(c):
        p = feats[ch]
        if ch < (c // 3) * 3:
            g = guide[..., ch % 3]
            mi, mp = matlab_window_mean(g), matlab_window_mean(p)
            a = (matlab_window_mean(g * p) - mi * mp) / (matlab_window_mean(g * g) - mi * mi + 0.01)
            b = mp - a * mi
            filtered[..., ch] = matlab_window_mean(a) * g + matlab_window_mean(b)
        else:
            filtered[..., ch] = color_guided_filter(
                guide, p, 0, 0.01, mean=lambda x, _r: matlab_window_mean(x)
            )
    _, y = pca_reference(filtered.reshape(-1, c), k)
    y = (y - y.min(0)) / (y.max(0) - y.min(0))
    return y.reshape(h, w, k), filtered


def matting_laplacian_reference(image: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Levin et al.'s matting Laplacian, dense, built window by window (3×3 windows inside
    the image): L_ij = Σ_k [δ_ij − (1 + (I_i − μ_k)ᵀ (Σ_k + ε/9·I)⁻¹ (I_j − μ_k)) / 9]."""
    img = np.asarray(image, np.float64)
    h, w, c = img.shape
    n = h * w
    lap = np.zeros((n, n))
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            idx = [(y + dy) * w + (x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            win = img.reshape(n, c)[idx]
            mu = win.mean(axis=0)
            cov = (win - mu).T @ (win - mu) / 9.0
            inv = np.linalg.inv(cov + eps / 9.0 * np.eye(c))
            for a, i in enumerate(idx):
                for b, j in enumerate(idx):
                    aff = (1.0 + (win[a] - mu) @ inv @ (win[b] - mu)) / 9.0
                    lap[i, j] += (1.0 if i == j else 0.0) - aff
    return lap


def matting_affinity_exact(image: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """The matting affinity W (dense, zero diagonal) in exact rational arithmetic on the float64
    inputs, rounded once at the end: W_ij = Σ_k (1 + (I_i − μ_k)ᵀ (Σ_k + ε/9·I)⁻¹ (I_j − μ_k)) / 9
    over the 3×3 windows k holding both. For small images (every window's inverse is exact)."""
    from fractions import Fraction

    img = np.asarray(image, np.float64)
    h, w, c = img.shape
    n = h * w
    px = [[Fraction(float(v)) for v in img[i // w, i % w]] for i in range(n)]
    reg = Fraction(float(eps)) / 9
    out = [[Fraction(0)] * n for _ in range(n)]
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            idx = [(y + dy) * w + (x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            mu = [sum(px[i][ch] for i in idx) / 9 for ch in range(c)]
            d = {i: [px[i][ch] - mu[ch] for ch in range(c)] for i in idx}
            a = [
                [sum(d[i][r] * d[i][s] for i in idx) / 9 + (reg if r == s else 0) for s in range(c)]
                for r in range(c)
            ]
            inv = _exact_inverse(a)
            for i in idx:
                u = [sum(inv[r][s] * d[i][s] for s in range(c)) for r in range(c)]
                for j in idx:
                    if i != j:
                        out[i][j] += (1 + sum(u[r] * d[j][r] for r in range(c))) / 9
    return np.array([[float(v) for v in row] for row in out])


def _exact_inverse(a: list) -> list:
    """Gauss–Jordan inverse of a non-singular matrix of Fractions."""
    from fractions import Fraction

    m = len(a)
    aug = [list(row) + [Fraction(int(r == s)) for s in range(m)] for r, row in enumerate(a)]
    for col in range(m):
        pivot = next(r for r in range(col, m) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        head = aug[col][col]
        aug[col] = [v / head for v in aug[col]]
        for r in range(m):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [v - f * p for v, p in zip(aug[r], aug[col], strict=True)]
    return [row[m:] for row in aug]
