"""Float64 moments of feature vectors (the PCA's sums), accumulated band by band."""

from __future__ import annotations

import numpy as np

from sss_rt import native
from sss_rt.postprocess.pca import PCABasis, basis_from_moments

_BLOCK_PIXELS = 1 << 14


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


def rough_mean(features: np.ndarray) -> np.ndarray:
    """Per-channel mean of C×H×W features on a sparse pixel grid: a shift that conditions the
    float64 moments (it need not be the exact mean)."""
    _c, h, w = features.shape
    step = max(1, int(np.sqrt(h * w / 4096)))
    return features[:, ::step, ::step].mean(axis=(1, 2), dtype=np.float64)
