"""Per-image PCA with a deterministic sign rule, and per-dimension [0, 1] normalization."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from sss_rt import blas


@dataclass(frozen=True)
class PCABasis:
    """Top principal directions of a set of feature vectors."""

    mean: np.ndarray  # (C,) float64
    components: np.ndarray  # (k, C) float64, rows are unit eigenvectors, descending eigenvalue
    eigenvalues: np.ndarray  # (k,) float64
    scale: float = 0.0  # RMS magnitude of the vectors (about zero), for degeneracy tests

    def degenerate(self, rel_tol: float = 1e-5) -> np.ndarray:
        """(k,) bool: components whose spread is float round-off relative to the data scale."""
        spread = np.sqrt(np.maximum(self.eigenvalues, 0.0))
        return spread <= rel_tol * max(self.scale, 1e-30)

    def project(self, x: np.ndarray, block: int = 1 << 14) -> np.ndarray:
        """Centre (N, C) vectors and project them onto the components: (N, k) float32.

        Products in float64: the weak components of a strongly anisotropic spread would
        otherwise drown in the rounding of the strong one.
        """
        out = np.empty((x.shape[0], self.components.shape[0]), np.float32)
        for start in range(0, x.shape[0], block):
            rows = x[start : start + block].astype(np.float64) - self.mean
            out[start : start + block] = rows @ self.components.T
        return out


def flip_signs(components: np.ndarray) -> np.ndarray:
    """Make each row's largest-magnitude entry positive (scikit-learn's ``svd_flip`` rule)."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


@contextmanager
def serial_blas() -> Iterator[None]:
    """BLAS/LAPACK on one thread inside the block (:func:`sss_rt.blas.one_thread`).

    The 128×128 eigendecomposition takes ~3 ms on one thread; with OpenBLAS's threads it
    measured 10–165 ms when it ran between the compiled kernels' parallel stages.
    """
    with blas.one_thread():
        yield


def basis_from_moments(
    total: np.ndarray, gram: np.ndarray, count: int, n_components: int
) -> PCABasis:
    """PCA basis from Σx (C,) and Σxxᵀ (C, C) over ``count`` vectors."""
    total = np.asarray(total, np.float64)
    mean = total / count
    cov = (np.asarray(gram, np.float64) - np.outer(total, mean)) / max(count - 1, 1)
    cov = 0.5 * (cov + cov.T)
    with serial_blas():
        values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][: n_components + 1]
    keep = order[:n_components]
    comps = flip_signs(vectors[:, keep].T)
    ev = values[order][:n_components]
    if len(keep) < n_components:  # fewer channels than components: the rest are zero (and
        # flagged degenerate), so the embedding always has n_components dims
        missing = n_components - len(keep)
        comps = np.vstack([comps, np.zeros((missing, comps.shape[1]))])
        ev = np.concatenate([ev, np.zeros(missing)])
    scale = float(np.sqrt(max(np.trace(np.asarray(gram, np.float64)) / max(count, 1), 0.0)))
    return PCABasis(mean=mean, components=comps, eigenvalues=ev, scale=scale)


def normalize_unit(
    y: np.ndarray,
    constant: np.ndarray | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Scale each column of (N, k) to [0, 1] by its min and max (float32 out).

    ``bounds``: (k,) lows and highs to scale by instead, values outside them clipped.
    A constant column (or one flagged in ``constant``) becomes 0.
    """
    y = np.asarray(y, np.float32)
    columns = np.ascontiguousarray(y.T)  # contiguous rows: fast reductions
    if bounds is None:
        lo = columns.min(axis=1)
        span = columns.max(axis=1) - lo  # the same float32 difference as the maximum's below
    else:
        lo = np.asarray(bounds[0], np.float32)
        span = np.asarray(bounds[1], np.float32) - lo
    flat = span <= 0 if constant is None else (span <= 0) | constant
    columns -= lo[:, None]
    columns /= np.where(flat, 1.0, span).astype(np.float32)[:, None]
    if bounds is not None:
        np.clip(columns, 0.0, 1.0, out=columns)
    columns[flat] = 0.0
    if len(columns) > 1:  # interleave: OpenCV's merge is several times NumPy's strided copy
        try:
            import cv2
        except ImportError:  # a GPU machine's minimal environment: the same values, slower
            return np.ascontiguousarray(columns.T)
        return cv2.merge(list(columns)).reshape(-1, len(columns))
    return np.ascontiguousarray(columns.T)


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
