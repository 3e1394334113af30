"""Image gradients with matched 13-tap prefilter/derivative pairs (Farid and Simoncelli, TIP
2004, "Differentiation of discrete multidimensional signals").

The pair is derived here by the paper's criterion instead of being copied from its tables: a
symmetric prefilter p and an antisymmetric derivative d of 13 taps that minimize
∫₀^π |ω·P(ω) − i·D(ω)|² dω (the derivative of the prefiltered signal, against the derivative
filter's response; uniform frequency weighting) with P(0) = Σp = 1 — a least-squares problem
with one linear constraint, solved in closed form. The gradient of an image is
(p ⊗ d, d ⊗ p) applied separably with replicated borders.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy.ndimage import correlate1d

TAPS = 13


@cache
def derivative_pair(taps: int = TAPS, samples: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(p, d): the prefilter (sums to 1) and derivative (d·[.., -1, 0, 1, ..] positive for a
    rising ramp) of ``taps`` coefficients, centred."""
    if taps % 2 == 0 or taps < 3:
        raise ValueError("taps must be odd and ≥ 3")
    h = taps // 2
    w = np.linspace(0.0, np.pi, samples)
    k = np.arange(1, h + 1)
    # unknowns: p0, p1..ph (p symmetric), d1..dh (d_k = -d_-k);
    # ω·P(ω) = ω·(p0 + 2Σ p_k cos kω);  the derivative filter's response is -2i Σ d_k sin kω
    a = np.concatenate(
        [w[:, None], 2 * w[:, None] * np.cos(np.outer(w, k)), -2 * np.sin(np.outer(w, k))],
        axis=1,
    )
    gram = a.T @ a
    c = np.zeros(a.shape[1])
    c[: h + 1] = [1.0] + [2.0] * h  # Σp = p0 + 2Σ p_k
    u = np.linalg.solve(gram, c)
    u /= c @ u
    p_half, d_half = u[: h + 1], u[h + 1 :]
    p = np.concatenate([p_half[:0:-1], p_half])
    d = np.concatenate([-d_half[::-1], [0.0], d_half])  # correlation: +d_k at offset +k
    return p, d


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """‖∇I‖ of the luminance (mean of the channels) of an H×W(×C) image, replicate-padded."""
    gray = np.asarray(image, np.float64)
    if gray.ndim == 3:
        gray = gray.mean(axis=2)
    p, d = derivative_pair()
    gx = correlate1d(correlate1d(gray, p, axis=0, mode="nearest"), d, axis=1, mode="nearest")
    gy = correlate1d(correlate1d(gray, d, axis=0, mode="nearest"), p, axis=1, mode="nearest")
    return np.hypot(gx, gy)
