"""The segmentation's compiled kernels (``kernels/cpu_segmentation.c``): the matting affinity,
triangular solves with a sparse LU factor, the weighted Grams and the per-iteration terms
(weights, right-hand sides) of the constrained sparsification, and the relaxed sparsification's
operator on all layers at once. Where the package was built without a C compiler, SuperLU
solves and the NumPy/SciPy paths run."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import scipy.sparse as sp

from sss_rt.native import chunks, default_threads, each, split

try:
    from sss_rt.kernels import _cpu_segmentation as _ext
except ImportError:  # built without a C compiler
    _ext = None


def available() -> bool:
    """True when the compiled kernels were built with the package."""
    return _ext is not None


def describe() -> str:
    """One line for ``sss-rt info``."""
    if _ext is None:
        return "scipy/numpy (no compiled kernel): SuperLU solves, pairwise-products GEMM"
    return f"native: triangular solves on SuperLU's factors, Grams ({_ext.grams_variant()})"


class LUSolver:
    """x = A⁻¹b for a symmetric A that SuperLU factorized as ``lu`` (of A[rows][:, rows] when
    ``rows`` is given: a symmetric reordering). With the compiled kernel the solves run in
    ``tri_solve`` on SuperLU's factors as they are: Pr·A·Pc = L·U and Aᵀ = A give
    A = Pc·Uᵀ·Lᵀ·Pr, and U's and L's columns are Uᵀ's and Lᵀ's rows. A call streams the factors
    once for all its right-hand sides, split over threads (SuperLU's own solve costs ~4× more per
    call and holds the GIL); without the kernel, SuperLU solves."""

    def __init__(
        self,
        lu,
        rows: np.ndarray | None = None,
        compiled: bool | None = None,
        threads: int | None = None,
    ):
        n = lu.shape[0]
        self.n = n
        self.threads = threads or default_threads()
        rows = np.arange(n) if rows is None else np.asarray(rows)
        inverse = np.empty(n, np.int64)
        inverse[rows] = np.arange(n)
        self._lu, self._rows, self._inverse = lu, rows, inverse
        self.nnz = int(lu.nnz)  #: the factor's stored entries (L + U where the kernel solves)
        self.compiled = False
        if not available() or compiled is False:
            return
        lower, upper = sp.csc_matrix(lu.L), sp.csc_matrix(lu.U)
        diagonal = np.arange(n)
        self.compiled = bool(
            np.all(np.diff(lower.indptr) > 0)
            and np.all(np.diff(upper.indptr) > 0)
            and np.array_equal(lower.indices[lower.indptr[:-1]], diagonal)
            and np.array_equal(upper.indices[upper.indptr[1:] - 1], diagonal)
        )  # else not the layout the sweeps read (never seen from SuperLU): its own solve
        if not self.compiled:
            return
        self._lu = None  # its factors live on below; SuperLU's copy can go
        self.nnz = int(lower.nnz + upper.nnz)
        inv_c = np.empty(n, np.int64)
        inv_c[lu.perm_c] = np.arange(n)
        self._gather_in = rows[inv_c]  # Pcᵀ·b
        self._gather_out = lu.perm_r[inverse]  # Prᵀ·z
        self._factors = tuple(
            a
            for m in (upper, lower)  # F = Uᵀ, B = Lᵀ
            for a in (m.indptr.astype(np.int64), m.indices.astype(np.int32, copy=False), m.data)
        )
        self._nnz = (upper.nnz, lower.nnz)

    def solve(self, b: np.ndarray) -> np.ndarray:
        """A⁻¹b for b of shape (n,) or (n, r), as float64 of the same shape."""
        b = np.asarray(b, np.float64)
        if not self.compiled:
            return self._lu.solve(np.asfortranarray(b[self._rows]))[self._inverse]
        cols = b.reshape(self.n, -1)[self._gather_in]
        r = cols.shape[1]
        # the columns in parts over the threads (each part streams the factors once), ≤ 32 each
        parts = max(min(self.threads, r), -(-r // 32))
        out = np.empty((self.n, r))

        def run(c0: int, c1: int) -> None:
            x = np.ascontiguousarray(cols[:, c0:c1])
            _ext.tri_solve(*self._factors, x, self.n, *self._nnz, c1 - c0)
            out[:, c0:c1] = x[self._gather_out]

        split(r, parts, run)
        return out.reshape(b.shape)


#: parts of a sparse matrix's rows the compiled row kernels take (fixed: the CG's dot products
#: add one partial sum per part, in order — the same bits on any thread count)
ROW_PARTS = 16


class _CsrRows:
    """A sparse N×N matrix as the compiled kernels read it (CSR: int64 row pointers, int32
    columns, float64 values), its rows in ROW_PARTS fixed parts of about equal non-zeros."""

    def __init__(self, a: sp.spmatrix):
        a = sp.csr_matrix(a)
        self.n = a.shape[0]
        self.csr = (
            a.indptr.astype(np.int64),
            a.indices.astype(np.int32, copy=False),
            a.data.astype(np.float64, copy=False),
        )
        cuts = np.searchsorted(self.csr[0], np.linspace(0, a.nnz, ROW_PARTS + 1))
        cuts[0], cuts[-1] = 0, self.n
        self.parts = [(int(p), int(q)) for p, q in itertools.pairwise(cuts) if q > p]


class SparseProduct:
    """x ↦ A·x for x of shape (N,) or (N, R), A sparse N×N, as float64 C-order. With the
    compiled kernel (``csr_matmul``) rows split over threads (the same bits on any thread count;
    at 640×480, L·Q for 16 vectors ~4× SciPy's single-threaded product, which also copies a
    column-major block first); without it SciPy's."""

    def __init__(self, a: sp.spmatrix, threads: int | None = None, compiled: bool | None = None):
        self._a = sp.csr_matrix(a)
        self.n = self._a.shape[0]
        self.threads = threads or default_threads()
        compiled = compiled is not False and available()
        self._rows = _CsrRows(self._a) if compiled else None

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        if self._rows is None:
            return np.asarray(self._a @ x)
        if not (x.flags.c_contiguous and x.dtype == np.float64):  # e.g. a Krylov block
            rows = np.empty(x.shape, np.float64)  # row-major, copied by parts of rows
            split(len(x), self.threads, lambda a, b: np.copyto(rows[a:b], x[a:b]))
            x = rows
        out = np.empty_like(x)
        r = 1 if x.ndim == 1 else x.shape[1]
        csr = self._rows.csr

        def run(p: int, q: int) -> None:
            _ext.csr_matmul(*csr, x, out, self.n, len(csr[1]), r, p, q)

        each(self._rows.parts, self.threads, run)
        return out


class LayerOperator:
    """x ↦ A·x + diag ⊙ x + δ·(x 1)1ᵀ for x of shape (N, R), R ≤ 8 layers by pixel: the relaxed
    sparsification's operator blkdiag(A + diag_r) + δ·CᵀC, A sparse N×N. With the compiled
    kernel (``layer_operator``) each pixel's R layers are one vector, rows split over threads
    (each row summed alone: the same bits on any thread count; at 320×240, 5 layers: ~4× SciPy's
    single-threaded CSR product); without it SciPy's."""

    def __init__(self, a: sp.spmatrix, threads: int | None = None, compiled: bool | None = None):
        a = sp.csr_matrix(a)
        self.n = a.shape[0]
        self.threads = threads or default_threads()
        self.compiled = compiled is not False and available()
        self._a = a
        if self.compiled:
            self._rows = _CsrRows(a)

    def __call__(self, x: np.ndarray, diag: np.ndarray, delta: float) -> np.ndarray:
        """The operator on x (N×R float64, C order); ``diag`` N×R."""
        return self.with_dot(x, diag, delta)[0]

    def with_dot(self, x: np.ndarray, diag: np.ndarray, delta: float) -> tuple[np.ndarray, float]:
        """(the operator on x, Σ x ⊙ (operator on x)): the CG's q = A·p and pᵀq in one pass
        (the dot's partial sums per fixed part of rows, added in order)."""
        if not self.compiled:
            out = self._a @ x + diag * x + delta * x.sum(axis=1, keepdims=True)
            return out, float(np.vdot(x, out))
        x = np.ascontiguousarray(x, np.float64)
        diag = np.ascontiguousarray(diag, np.float64)
        out = np.empty_like(x)
        r = x.shape[1]
        csr = self._rows.csr
        dots = [0.0] * len(self._rows.parts)

        def run(j: int, p: int, q: int) -> None:
            dots[j] = _ext.layer_operator(*csr, diag, x, out, self.n, len(csr[1]), r,
                                          float(delta), p, q)  # fmt: skip

        each([(j, *pq) for j, pq in enumerate(self._rows.parts)], self.threads, run)
        return out, float(sum(dots))

    def cg_update(
        self,
        x: np.ndarray,
        r: np.ndarray,
        p: np.ndarray,
        q: np.ndarray,
        inv: np.ndarray,
        coupling: np.ndarray,
        z: np.ndarray,
        alpha: float,
    ) -> tuple[float, float]:
        """The rest of a CG step, in place: x += α·p, r −= α·q, z = M·r with M the inverse of
        each pixel's block diag(d) + δ·11ᵀ given as ``inv`` = 1/d (N×R) and ``coupling``
        = δ/(1 + δ·Σ inv) (N,); returns (Σ r·z, Σ r·r). All float64, C order (N×R)."""
        if not self.compiled:
            x += alpha * p
            r -= alpha * q
            np.multiply(inv, r, out=z)
            z -= inv * (coupling[:, None] * z.sum(axis=1, keepdims=True))
            return float(np.vdot(r, z)), float(np.vdot(r, r))
        sums = [(0.0, 0.0)] * len(self._rows.parts)
        k = x.shape[1]

        def run(j: int, a: int, b: int) -> None:
            sums[j] = _ext.cg_residual(x, r, p, q, inv, coupling, z, self.n, k, float(alpha), a, b)

        each([(j, *ab) for j, ab in enumerate(self._rows.parts)], self.threads, run)
        return float(sum(s[0] for s in sums)), float(sum(s[1] for s in sums))


#: most parts of the Grams' pixel sums (each part's K×m×m partial sums are held: 16 × 3.6 MB
#: at K = 40, m = 100)
GRAM_PARTS = 16


def weighted_grams(
    vecs: tuple[np.ndarray, int],
    weights: np.ndarray,
    threads: int | None = None,
    level: int = 2,
) -> np.ndarray | None:
    """Eᵀ diag(c_k) E for every row c_k of ``weights`` (K×N), E as :func:`pad_vectors` gives it;
    K×m×m float64, symmetric (float32 sums over chunks of pixels, added in float64; pixels of
    weight 0 cost nothing and their rows of E are not read). None
    without the compiled kernel. ``level`` caps the loop (:func:`grams_level`): 2 the best the
    CPU has, 1 at most AVX2, 0 the plain C loop."""
    if _ext is None:
        return None
    e, m = vecs
    n, mp = e.shape
    c = np.ascontiguousarray(weights, np.float32)
    k = c.shape[0]
    # fixed parts (never the thread count's), added in order: the same sums on any thread count
    parts = chunks(n, GRAM_PARTS)
    outs = [np.zeros((k, m, mp)) for _ in parts]

    def run(j: int, a: int, b: int) -> None:
        _ext.weighted_grams(e, c, outs[j], n, mp, m, k, a, b, level)

    each([(j, a, b) for j, (a, b) in enumerate(parts)], threads, run)
    g = outs[0]
    for part in outs[1:]:
        g += part
    rows, cols = _symmetric_from_written(m)
    return g[:, rows, cols]


def irls_terms(
    alpha: np.ndarray,
    vecs: tuple[np.ndarray, int],
    scales: tuple[float, float, float, float],
    last: bool,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An iteration's terms of the constrained sparsification from α (K×N float64, C order):
    with ``last``, α's last row is set to 1 − Σ of the others first (in place); then the Grams'
    weights as departures from the floor's, ``delta`` = (e₁ + e₀) − :func:`irls_floor` (K×N
    float32), and
    ``rhs`` (K×m float64): Eᵀe₁ₖ for k < K − 1, Eᵀe₀ for the last (float32 sums over chunks of
    pixels, added in float64). E as :func:`pad_vectors` gives it; ``scales``: (γ − 2, w₁^γ,
    w₀^γ, τ), e₁ and e₀ as ``sparsify._weights`` makes them but for the power, the kernel's own
    (correctly rounded but for near-ties). Pixels in fixed parts over threads: the same bits on
    any thread count."""
    e, m = vecs
    n, mp = e.shape
    k = alpha.shape[0]
    delta = np.empty((k, n), np.float32)
    parts = chunks(n, GRAM_PARTS)
    outs = [np.zeros((k, mp)) for _ in parts]

    def run(j: int, a: int, b: int) -> None:
        _ext.irls_terms(alpha, delta, e, outs[j], k, n, mp, *scales, last, a, b)

    each([(j, a, b) for j, (a, b) in enumerate(parts)], threads, run)
    rhs = outs[0]
    for part in outs[1:]:
        rhs += part
    return delta, rhs[:, :m]


def irls_floor(scales: tuple[float, float, float, float]) -> float:
    """e₁ + e₀ at α = 0 as :func:`irls_terms` computes them: the weight of every pixel pinned at
    0 or 1, the Grams' base."""
    return float(_ext.irls_floor(*scales))


def grams_level(flags: frozenset[str] | set[str]) -> int:
    """The :func:`weighted_grams` level a CPU with these flags runs (the kernel still checks the
    CPU it is on): 2 with AVX-512F, 1 with AVX2 and FMA, else 0."""
    return 2 if "avx512f" in flags else 1 if {"avx2", "fma"} <= set(flags) else 0


@functools.cache
def _symmetric_from_written(m: int) -> tuple[np.ndarray, np.ndarray]:
    """For every entry (a, b) of an m×m Gram, the one of (a, b), (b, a) the kernel writes (see
    kernels/cpu_segmentation.c), the upper one where it writes both: exactly symmetric."""
    full = 8 * (m // 8)
    a, b = np.indices((m, m))
    i, j = np.minimum(a, b), np.maximum(a, b)
    upper = (j < full) | (i >= full)  # is (i, j) written
    return np.where(upper, i, j), np.where(upper, j, i)


def matting_affinity(image: np.ndarray, eps: float, threads: int | None = None) -> sp.csr_matrix:
    """The closed-form matting affinity of an H×W×3 float64 image (H, W ≥ 3) as CSR, by the
    compiled kernel: the windows' means and Cholesky factors, then each row's entries, both over
    image rows on sss-rt's threads (each pair computed whole by one thread: the same bits on
    any thread count and CPU). Every in-image pixel within two rows and columns is stored,
    exact zeros included."""
    img = np.ascontiguousarray(image, np.float64)
    h, w = img.shape[:2]
    n = h * w
    win = np.empty((h - 2, w - 2, 9))
    threads = threads or default_threads()
    split(h - 2, threads, lambda a, b: _ext.matting_windows(img, win, h, w, eps, a, b))
    y, x = np.arange(h), np.arange(w)  # each pixel's neighbourhood: rows × columns in the image
    ny = np.minimum(y + 2, h - 1) - np.maximum(y - 2, 0) + 1
    nx = np.minimum(x + 2, w - 1) - np.maximum(x - 2, 0) + 1
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum((ny[:, None] * nx[None, :] - 1).ravel(), out=indptr[1:])
    indices = np.empty(indptr[-1], np.int32)
    values = np.empty(indptr[-1], np.float64)
    split(h, threads, lambda a, b: _ext.matting_rows(img, win, indptr, indices, values, h, w, a, b))
    return sp.csr_matrix((values, indices, indptr), shape=(n, n))


def pad_vectors(vecs: np.ndarray) -> tuple[np.ndarray, int]:
    """The eigenvectors N×m as the Gram kernel reads them: float32 rows padded to 16 columns."""
    n, m = vecs.shape
    e = np.zeros((n, -(-m // 16) * 16), np.float32)
    e[:, :m] = vecs
    return e, m
