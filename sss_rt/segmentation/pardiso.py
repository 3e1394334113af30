"""Solves with a sparse symmetric matrix by MKL PARDISO's supernodal LDLᵀ (``pip install mkl``).

The eigensolver needs (L − σI)⁻¹ for an indefinite L. SuperLU treats it as unsymmetric: an LU
with both triangles and partial pivoting, in column kernels of its own. PARDISO's symmetric
indefinite factorization (matrix type −2: Bunch–Kaufman 1×1 and 2×2 pivots inside supernodes,
dense blocks in BLAS 3) stores one triangle and does about half the work. On the 640×480
Laplacian with the same fill-reducing order (2 cores): 2.3 s for analysis and factorization
on two threads against SuperLU's ~16 s plus 1.9 s to extract its factors, and 61M stored
entries against 117M; its 16-column solves ~0.34 s, about the compiled kernel's on SuperLU's
twice larger factors. In the committed benchmark the eigenvector stage took 17.8 s against
26.1 s, and the whole run 0.6 GB less.

Bits: MKL's thread count is set for each call on the calling thread only
(``MKL_Set_Num_Threads_Local``: other work in the process keeps its own count). The layers must
not depend on the machine, and the eigenvectors — through the chaotic IRLS, the layers — follow
every bit of the solves. Measured on a 160×160 grid with MKL's dynamic adjustment off: the
factor itself rounded differently on 5+ threads unless PARDISO's conditional-numerical-
reproducibility mode was on (``iparm[33]``), and with it on, a factor made on t ≥ 5 threads
still solved differently on t threads (its parallel solve is laid out at factorization). So
the factorization runs in that mode on :data:`FACTOR_THREADS` threads, and the solves on
sss-rt's: the same bits for factor and solves on 1 to 16 threads (tested). Two threads rather
than one also made the solves faster (at 640×480: 2.0 s instead of 3.3 s to factorize, 0.37 s
instead of 0.55 s per 16-column solve). A pivot that PARDISO had to perturb would make the
solves inexact: the factorization is then refused (:class:`PardisoError`) and the caller uses
another.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
import threading
import weakref
from importlib import metadata

import numpy as np
import scipy.sparse as sp

from sss_rt.native import default_threads

_P = ctypes.POINTER
_I32 = ctypes.c_int32
_I64 = ctypes.c_int64
#: matrix type: real symmetric indefinite
_MTYPE = -2
#: threads of the factorization, and the count PARDISO's reproducible mode lays its work out
#: for: fixed, so that factor and solves have the same bits on any machine (see above)
FACTOR_THREADS = 2

#: milliseconds MKL's OpenMP threads spin after each PARDISO call before they sleep, set for
#: each call on the calling thread (and the thread's own setting restored after it; Intel's
#: OpenMP runtime only). Left at its default, 200, the spinning thread took a core from the
#: Krylov products that follow every solve: at 640×480 the eigenvector stage 17.4 s against
#: 16.2 s with 0 (means of six alternating runs), and 3 s more CPU time. Where MKL threads with
#: GNU OpenMP instead (PyTorch loaded it first), nothing is set: libgomp spins only briefly
BLOCKTIME = 0

_lock = threading.Lock()
_state: dict[str, object] = {}


class PardisoError(RuntimeError):
    """PARDISO refused a matrix (its error code in the message), or perturbed a pivot."""


def _library_paths() -> list[str]:
    """Where mkl_rt may be: the ``mkl`` wheel's files, the environment's lib/, the loader's."""
    paths: list[str] = []
    try:
        files = metadata.files("mkl") or []
        paths += [str(f.locate()) for f in files if f.name.startswith("libmkl_rt.")]
    except metadata.PackageNotFoundError:
        pass
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        paths += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")), key=len)
    found = ctypes.util.find_library("mkl_rt")
    if found:
        paths.append(found)
    return list(dict.fromkeys(paths))


def _library() -> ctypes.CDLL | None:
    """mkl_rt, loaded once (None where it is not installed)."""
    with _lock:
        if "lib" not in _state:
            lib = None
            for path in _library_paths():
                try:
                    lib = ctypes.CDLL(path)
                    lib.pardiso.restype = None
                    lib.pardiso.argtypes = [_P(_I64)] + [_P(_I32)] * 5 + [ctypes.c_void_p]
                    lib.pardiso.argtypes += [_P(_I32)] * 6 + [ctypes.c_void_p] * 2 + [_P(_I32)]
                    lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
                    lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
                    break
                except (OSError, AttributeError):
                    lib = None
            _state["lib"] = lib
        return _state["lib"]  # type: ignore[return-value]


def _openmp() -> ctypes.CDLL | None:
    """Intel's OpenMP runtime where MKL threads with it (its default), None otherwise (GNU
    OpenMP, sequential MKL); looked up once it is loaded, which MKL does on its first threaded
    call."""
    with _lock:
        if _state.get("omp") is None:
            try:
                omp = ctypes.CDLL("libiomp5.so", mode=os.RTLD_NOLOAD)
                omp.kmp_get_blocktime.restype = ctypes.c_int
                omp.kmp_set_blocktime.argtypes = [ctypes.c_int]
            except (OSError, AttributeError):
                return None
            _state["omp"] = omp
        return _state["omp"]  # type: ignore[return-value]


def available() -> bool:
    """True when MKL's runtime library (``mkl_rt``) can be loaded."""
    return _library() is not None


def describe() -> str:
    """One line for ``sss-rt info``."""
    if not available():
        return "SuperLU (MKL absent: `pip install mkl` for PARDISO, ~1.5× faster eigenvectors)"
    return "MKL PARDISO symmetric indefinite LDLᵀ"


class PardisoSolver:
    """x = A⁻¹b for a real symmetric (possibly indefinite) sparse A, factorized once.

    Parameters
    ----------
    a : scipy.sparse matrix, shape (n, n)
        Symmetric; only its upper triangle is read.
    threads : int, optional
        MKL threads for each solve (sss-rt's count by default; the factorization takes
        :data:`FACTOR_THREADS`); the bits do not depend on it.
    rows : ndarray of int, shape (n,), optional
        A fill-reducing order (position j holds the original row ``rows[j]``); METIS's nested
        dissection where not given.

    Raises
    ------
    PardisoError
        MKL is not installed, PARDISO reported an error, or a pivot had to be perturbed.
    """

    def __init__(self, a: sp.spmatrix, rows: np.ndarray | None = None, threads: int | None = None):
        lib = _library()
        if lib is None:
            raise PardisoError("MKL is not installed (pip install mkl)")
        self._lib = lib
        self.n = n = int(a.shape[0])
        self.threads = threads or default_threads()
        coo = sp.csr_matrix(a)
        coo.sum_duplicates()
        coo = coo.tocoo()
        above = coo.row < coo.col
        diagonal = np.arange(n)  # every diagonal entry stored (zeros too), as PARDISO requires
        i = np.concatenate([coo.row[above], diagonal])
        j = np.concatenate([coo.col[above], diagonal])
        values = np.concatenate([coo.data[above], coo.diagonal()])
        upper = sp.csr_matrix((values, (i, j)), shape=(n, n))
        upper.sort_indices()
        self._indptr = upper.indptr.astype(np.int32)
        self._indices = upper.indices.astype(np.int32)
        self._data = np.ascontiguousarray(upper.data, np.float64)
        self._pt = np.zeros(64, np.int64)  # PARDISO's handle, opaque
        self._iparm = iparm = np.zeros(64, np.int32)
        iparm[0] = 1  # every value below given
        iparm[1] = 2  # METIS where no order is given
        iparm[7] = 0  # no iterative refinement: the factorization is exact or refused
        iparm[9] = 13  # pivots below 1e-13·‖A‖ are perturbed (and then refused, below)
        iparm[10] = iparm[12] = 0  # no scaling or matching (symmetric indefinite defaults)
        iparm[17] = iparm[18] = -1  # report the factor's non-zeros and the factorization's work
        iparm[20] = 1  # Bunch–Kaufman 1×1 and 2×2 pivots
        iparm[33] = FACTOR_THREADS  # reproducible mode, laid out for this count
        iparm[34] = 1  # zero-based indices
        self._perm = np.zeros(n, np.int32)
        if rows is not None:
            self._perm[:] = np.asarray(rows, np.int32)
            iparm[4] = 1  # the order given
        self._lock = threading.Lock()  # one handle: one call at a time
        self._finalizer = weakref.finalize(self, _release, lib, self._pt, n, self._iparm)
        self._call(12, threads=FACTOR_THREADS)  # analysis and factorization
        self.nnz = int(iparm[17])  #: the factor's stored entries (one triangle)
        self.flops = 1e6 * float(iparm[18])  #: the factorization's floating-point operations
        self.perturbed = int(iparm[13])
        self.inertia = (int(iparm[21]), int(iparm[22]))  #: positive and negative eigenvalues
        if self.perturbed:
            self.close()
            raise PardisoError(f"{self.perturbed} pivots perturbed: A is too near singular")

    def _call(
        self,
        phase: int,
        b: np.ndarray | None = None,
        x: np.ndarray | None = None,
        threads: int | None = None,
    ) -> None:
        nrhs = 1 if b is None or b.ndim == 1 else b.shape[1]
        matrix = (self._data, self._indptr, self._indices, self._perm)
        with self._lock:
            before = self._lib.MKL_Set_Num_Threads_Local(threads or self.threads)
            omp = _openmp()
            spin = omp.kmp_get_blocktime() if omp is not None else None
            if omp is not None:  # see BLOCKTIME
                omp.kmp_set_blocktime(BLOCKTIME)
            try:
                err = _pardiso(self._lib, self._pt, self._iparm, phase, self.n, matrix, nrhs, b, x)
            finally:
                if omp is not None:
                    omp.kmp_set_blocktime(spin)
                self._lib.MKL_Set_Num_Threads_Local(before)
        if err:
            raise PardisoError(f"PARDISO error {err} (phase {phase})")

    def solve(self, b: np.ndarray) -> np.ndarray:
        """A⁻¹b for b of shape (n,) or (n, r), as float64 of the same shape."""
        if not self._finalizer.alive:
            raise ValueError("the factorization was released (close())")
        b = np.asfortranarray(b, np.float64)
        if b.shape[0] != self.n or b.ndim > 2:
            raise ValueError(f"b must have shape ({self.n},) or ({self.n}, r), got {b.shape}")
        x = np.empty_like(b, order="F")
        if b.size:
            self._call(33, b, x)
        return x

    def close(self) -> None:
        """Release the factorization's memory now (else when the solver is collected)."""
        self._finalizer()


def _pardiso(
    lib: ctypes.CDLL,
    pt: np.ndarray,
    iparm: np.ndarray,
    phase: int,
    n: int,
    matrix: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    nrhs: int = 1,
    b: np.ndarray | None = None,
    x: np.ndarray | None = None,
) -> int:
    """One ``pardiso`` call on handle ``pt`` (one factor kept, no messages); ``matrix``: the
    upper triangle's (values, row pointers, column indices) and the order, None where the phase
    reads none. Returns PARDISO's error code."""
    err, zero = _I32(0), _I32(0)
    if matrix is None:
        values, arrays = None, [ctypes.byref(zero)] * 3
    else:
        values = matrix[0].ctypes.data
        arrays = [array.ctypes.data_as(_P(_I32)) for array in matrix[1:]]
    lib.pardiso(
        pt.ctypes.data_as(_P(_I64)),
        ctypes.byref(_I32(1)),  # one factor kept
        ctypes.byref(_I32(1)),  # and it is this one
        ctypes.byref(_I32(_MTYPE)),
        ctypes.byref(_I32(phase)),
        ctypes.byref(_I32(n)),
        values,
        *arrays,
        ctypes.byref(_I32(nrhs)),
        iparm.ctypes.data_as(_P(_I32)),
        ctypes.byref(zero),  # no messages
        None if b is None else b.ctypes.data,
        None if x is None else x.ctypes.data,
        ctypes.byref(err),
    )
    return err.value


def _release(lib: ctypes.CDLL, pt: np.ndarray, n: int, iparm: np.ndarray) -> None:
    _pardiso(lib, pt, iparm, -1, n)  # release everything
