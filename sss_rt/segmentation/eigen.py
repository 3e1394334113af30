"""The eigenvectors of the segmentation Laplacian with the smallest eigenvalues in magnitude.

The authors take ``eigs(L, 100, 'SM')``. L is symmetric but can be indefinite (the semantic
affinity is negative between dissimilar neighbours), so the eigenvalues nearest zero are found
by shift-invert around a small negative shift: L − σI is factorized once by SuperLU. Its
ordering, for a Laplacian of an image grid: geometric nested dissection (halve the longer side,
a separator two pixels wide — the matting windows couple pixels two apart — ordered after both
halves, down to regions of 32 pixels), with the few pixels that carry long-range affinities
(superpixel centroids) last. At 320×240 it measured 30M non-zeros and 2.4 s against SuperLU's
best own ordering (minimum degree on LᵀL: 59M, 7.3 s; on L + Lᵀ: 117M, 43 s; COLAMD: 64M,
10 s). The constant vector is in L's null space (its rows sum to zero), so σ = 0 itself would
be singular. The solves run in the compiled kernel on SuperLU's factors (``native.LUSolver``).

The Krylov space of (L − σI)⁻¹ is grown a block of 16 vectors at a time (a solve streams the
factor once for all its right-hand sides: 16 cost about what 4 do; at 320×240 blocks of 16
needed 320 vectors, of 8 248 but more solves, of 32 448), each new block reorthogonalized
against the last two blocks and then against the whole basis (block Lanczos's three terms,
then a full pass for what rounding left), and Rayleigh–Ritz on L itself gives the eigenpairs
(so EᵀLE is diagonal to rounding, which the sparsification relies on), until every wanted
pair's residual ‖Lv − θv‖ is below 1e-8 of ‖L‖.
ARPACK (``scipy.sparse.linalg.eigsh``) does the job instead if that has not happened by 8k
vectors or the basis would not fit in ``KRYLOV_MB``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, eigsh, splu

from sss_rt import blas
from sss_rt.segmentation import pardiso
from sss_rt.segmentation.native import LUSolver, SparseProduct


@dataclass
class EigenStats:
    """What the solve cost: triangular-solve pairs, the factor's non-zeros, and which
    factorization (a name in :data:`FACTORIZATIONS`) made it."""

    solves: int = 0
    factor_nnz: int = 0
    factorization: str = ""
    factor_flops: float = 0.0  #: the factorization's, where the backend reports it (PARDISO)

    @property
    def solve_flops(self) -> float:
        return 4.0 * self.factor_nnz * self.solves  # two sweeps, a multiply-add per entry


BLOCK = 16
WATCH = 8
TOL = 1e-8
#: memory for the Krylov basis (at 320×240: ~340 vectors, 0.2 GB; at 640×480 ~0.8 GB). Its
#: image under L is not kept (at 640×480 it was another 0.8 GB, in the eigenvectors' peak): the
#: projection takes each new block's, the residuals apply L to the few Ritz vectors checked
KRYLOV_MB = 3072


def dissection_order(lap: sp.spmatrix, shape: tuple[int, int], leaf: int = 32) -> np.ndarray:
    """A fill-reducing order of an image grid's pixels (see the module's description)."""
    h, w = shape
    idx = np.arange(h * w).reshape(h, w)
    parts: list[np.ndarray] = []
    stack = [(0, h, 0, w, False)]
    while stack:  # depth first, each region's separator after both halves
        y0, y1, x0, x1, emit = stack.pop()
        if emit:
            parts.append(idx[y0:y1, x0:x1].ravel())
            continue
        if (y1 - y0) * (x1 - x0) <= leaf or max(y1 - y0, x1 - x0) <= 5:
            parts.append(idx[y0:y1, x0:x1].ravel())
            continue
        if y1 - y0 >= x1 - x0:
            m = (y0 + y1) // 2
            halves = [(y0, m, x0, x1), (m + 2, y1, x0, x1)]
            sep = (m, m + 2, x0, x1)
        else:
            m = (x0 + x1) // 2
            halves = [(y0, y1, x0, m), (y0, y1, m + 2, x1)]
            sep = (y0, y1, m, m + 2)
        stack.append((*sep, True))
        for half in reversed(halves):
            if half[1] > half[0] and half[3] > half[2]:
                stack.append((*half, False))
    grid = np.concatenate(parts)
    coo = sp.coo_matrix(lap)
    far = (np.abs(coo.row // w - coo.col // w) > 2) | (np.abs(coo.row % w - coo.col % w) > 2)
    distant = np.unique(np.concatenate([coo.row[far], coo.col[far]]))
    keep = np.ones(h * w, bool)
    keep[distant] = False
    return np.concatenate([grid[keep[grid]], distant])


def _pardiso(a: sp.spmatrix, rows: np.ndarray | None):
    if not pardiso.available():
        return None
    try:
        return pardiso.PardisoSolver(a, rows)
    except pardiso.PardisoError:  # a pivot it would have perturbed: the solves would be inexact
        return None


def _superlu(a: sp.spmatrix, rows: np.ndarray | None):
    if rows is None:
        return LUSolver(splu(sp.csc_matrix(a), permc_spec="MMD_ATA"))
    lu = splu(
        sp.csc_matrix(a[rows][:, rows]),
        permc_spec="NATURAL",
        diag_pivot_thresh=0.01,
        options={"SymmetricMode": True},
    )
    return LUSolver(lu, rows)


#: the factorizations of L − σI by name, each returning a solver (``.solve(b)``, ``.nnz``) or
#: None where it cannot: MKL PARDISO's symmetric LDLᵀ (:class:`pardiso.PardisoSolver`; absent
#: without MKL) and SuperLU's LU solved by the compiled kernel (:class:`native.LUSolver`)
FACTORIZATIONS = {"pardiso": _pardiso, "superlu": _superlu}
#: the order they are tried in (at 640×480 PARDISO took 2.3 s, SuperLU ~18 s);
#: ``$SSS_RT_FACTORIZATION`` (names, comma-separated) replaces it — ``superlu`` gives the layers
#: of a machine without MKL (the two factorizations round differently)
BACKENDS = ("pardiso", "superlu")


def configured_backends() -> tuple[str, ...]:
    """The factorizations to try: ``$SSS_RT_FACTORIZATION``'s, else :data:`BACKENDS`."""
    names = os.environ.get("SSS_RT_FACTORIZATION", "")
    chosen = tuple(name.strip() for name in names.split(",") if name.strip())
    return chosen or BACKENDS


def factorize(a: sp.spmatrix, rows: np.ndarray | None, backends: tuple[str, ...] = BACKENDS):
    """(name, solver) of the first of ``backends`` (names in :data:`FACTORIZATIONS`) that can
    factorize the symmetric ``a``. ``rows``: a fill-reducing symmetric order (position j holds
    row ``rows[j]``), or None for the backend's own."""
    unknown = [name for name in backends if name not in FACTORIZATIONS]
    if unknown:
        raise ValueError(f"unknown factorization {unknown[0]!r}: one of {sorted(FACTORIZATIONS)}")
    for name in backends:
        solver = FACTORIZATIONS[name](a, rows)
        if solver is not None:
            return name, solver
    raise RuntimeError(f"none of the factorizations {backends} could factorize the matrix")


def smallest_eigenvectors(
    lap: sp.spmatrix,
    k: int = 100,
    seed: int = 0,
    stats: EigenStats | None = None,
    shape: tuple[int, int] | None = None,
    backends: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues (k,), eigenvectors N×k, orthonormal columns), ordered by |eigenvalue|.
    ``shape``: the image grid L is on (H, W), for the nested-dissection ordering; ``backends``:
    the factorizations to try, in order (:func:`factorize`; :func:`configured_backends` if
    None)."""
    n = lap.shape[0]
    k = max(1, min(k, n - 2))
    lap = sp.csr_matrix(lap)
    norm = float(abs(lap).sum(axis=1).max()) or 1.0
    sigma = -1e-6 * float(abs(lap.diagonal()).max() or 1.0)
    shifted = lap - sigma * sp.identity(n, format="csr")
    perm = dissection_order(lap, shape) if shape is not None and shape[0] * shape[1] == n else None
    name, solver = factorize(shifted, perm, backends or configured_backends())
    stats = stats if stats is not None else EigenStats()
    stats.factor_nnz, stats.factorization = solver.nnz, name
    stats.factor_flops = float(getattr(solver, "flops", 0.0))

    def solve(v: np.ndarray) -> np.ndarray:
        stats.solves += v.shape[1] if v.ndim == 2 else 1
        return solver.solve(v)

    rng = np.random.default_rng(seed)
    if n <= 4 * BLOCK or k + 2 * BLOCK >= n:
        found = None
    else:
        found = _block_krylov(SparseProduct(lap), solve, k, n, norm, rng)
    if found is None:  # small problems, or no convergence: ARPACK with the same factorization
        op = LinearOperator((n, n), matvec=lambda v: solve(np.asarray(v).ravel()), dtype=float)
        vals, vecs = eigsh(lap, k=k, sigma=sigma, which="LM", v0=rng.standard_normal(n), OPinv=op)
    else:
        vals, vecs = found
    order = np.argsort(np.abs(vals))
    return vals[order], vecs[:, order]


def _block_krylov(lap, solve, k, n, norm, rng):
    """Block Krylov space of the shift-invert operator + Rayleigh–Ritz on L (``lap``: anything
    with ``lap @ x`` for N×b blocks: :class:`SparseProduct`); None if the k
    smallest-magnitude pairs have not converged by 8k vectors. The basis Q and QᵀLQ grow in
    place, a block at a time. The residuals of a few watched pairs are measured (the WATCH
    largest |θ|, which converge last, and the worst of the last full check; after every block
    or as ``_blocks_to_skip`` says), all k only once those are below the tolerance."""
    # Q (float64) within KRYLOV_MB; a smaller space than that falls back to ARPACK
    cap = min(8 * k, n - BLOCK, (KRYLOV_MB << 20) // (8 * n) - BLOCK)
    if cap < k + 3 * BLOCK:
        return None
    q = np.empty(
        (n, cap + BLOCK), order="F"
    )  # column blocks contiguous: BLAS reads them as they are
    h = np.empty((cap + BLOCK, cap + BLOCK))
    start_block = _orthonormal(rng.standard_normal((n, BLOCK)))  # Cholesky QR: ~4× Householder's
    if start_block is None or start_block.shape[1] < BLOCK:
        return None
    q[:, :BLOCK] = start_block
    dim, start, previous, next_check = BLOCK, 0, 0, k + 2 * BLOCK
    watch = np.arange(max(0, k - WATCH), k)  # positions in the |θ| order
    history: list[tuple[int, float]] = []  # (dimension, worst watched residual)
    while True:
        # L·Q and QᵀLQ for the columns added last (N-long rows as the GEMMs' long side: ~2×)
        new = slice(start, dim)
        h[:dim, new] = blas.inner(q[:, :dim], lap @ q[:, new])
        h[new, :dim] = h[:dim, new].T
        if dim >= next_check:
            theta, y = np.linalg.eigh(h[:dim, :dim])
            pick = np.argsort(np.abs(theta))[:k]
            worst = float(_ritz(q, lap, dim, theta, y, pick[watch])[1].max())
            next_check = dim + _blocks_to_skip(history, dim, worst, TOL * norm) * BLOCK
            if worst <= TOL * norm:
                vecs, resid = _ritz(q, lap, dim, theta, y, pick)
                if resid.max() <= TOL * norm:
                    return theta[pick], vecs
                worst = np.argsort(resid)[-WATCH:]
                watch = np.union1d(np.arange(max(0, k - WATCH), k), worst)
        if dim + BLOCK > cap:
            return None
        w = solve(q[:, start:dim])
        # reorthogonalized in two passes (Kahan's "twice is enough"): the first against the last
        # two blocks only — S = (L − σI)⁻¹ is symmetric, so in exact arithmetic S·Q_j lies in
        # span(Q_{j−1}, Q_j, Q_{j+1}) (block Lanczos) and this removes all but rounding — the
        # second against the whole basis, which removes what rounding left along every block.
        # Two full passes took 4.1 s at 640×480 against 2.7 s (line profile), for the same
        # solves and orthogonality (2e-15); one full pass alone lost the basis's orthogonality
        # on a one-object photo (the shift-invert amplifying what was left) and fell back to
        # ARPACK at 1,088 solves
        recent = q[:, previous:dim]
        w -= blas.matmul(blas.inner(recent, w).T, recent.T).T
        w -= blas.matmul(blas.inner(q[:, :dim], w).T, q[:, :dim].T).T
        block = _orthonormal(w)
        if block is None:
            return None
        width = block.shape[1]
        q[:, dim : dim + width] = block
        previous, start, dim = start, dim, dim + width


def _blocks_to_skip(history: list[tuple[int, float]], dim: int, resid: float, goal: float) -> int:
    """Blocks until the next check: 2 while the residual's last rate of decrease says more than
    4 blocks are still needed, else 1 (the rate varies too much to skip further: a late
    check costs a block of solves, an early one a fraction of that)."""
    history.append((dim, resid))
    if len(history) < 2 or resid <= goal:
        return 1
    (d0, r0), (d1, r1) = history[-2:]
    if r1 >= r0:
        return 2
    needed = np.log(r1 / goal) / (np.log(r0 / r1) / (d1 - d0))
    return 2 if needed > 4 * BLOCK else 1


def _ritz(q, lap, dim, theta, y, pick):
    """Ritz vectors N×len(pick) and their residuals ‖Lv − θv‖ (L applied BLOCK columns at a
    time: the compiled product's unrolled width, ~2× its any-width loop)."""
    yp = np.ascontiguousarray(y[:, pick].T)
    vecs = blas.matmul(yp, q[:, :dim].T).T
    resid = np.empty(len(pick))
    for c in range(0, len(pick), BLOCK):
        part = vecs[:, c : c + BLOCK]
        resid[c : c + BLOCK] = np.linalg.norm(
            lap @ part - part * theta[pick[c : c + BLOCK]], axis=0
        )
    return vecs, resid


def _orthonormal(w: np.ndarray) -> np.ndarray | None:
    """Orthonormal columns spanning w (N×b, already orthogonal to the basis): Cholesky QR
    twice (two b×b factorizations instead of a Householder QR of the tall block; 4× faster
    here), Householder QR when the Gram is singular; None when w has no new direction."""
    try:
        for _ in range(2):
            r = np.linalg.cholesky(blas.inner(w, w)).T
            w = blas.matmul(np.linalg.inv(r).T, w.T).T  # r is b×b: its inverse, then one GEMM
        return w
    except np.linalg.LinAlgError:
        block, r = np.linalg.qr(w)
        keep = np.abs(np.diag(r)) > 1e-10 * max(1.0, float(np.abs(np.diag(r)).max()))
        return block[:, keep] if keep.any() else None
