"""BLAS on one thread while sss-rt computes, so that no result depends on BLAS's thread count.

OpenBLAS's float32 GEMM rounds differently with different thread counts (measured with
OpenBLAS 0.3.31: 128×512 @ 512×4096, 1 vs 2 threads, 5% of the outputs differ, up to 5e-5),
and its thread count is a process-wide setting — OpenBLAS's ``set_num_threads_local`` is
process-wide too in its pthreads builds, the ones NumPy and SciPy ship. A limit set around one
computation therefore changes every other thread's BLAS calls while it lasts and is undone by
whichever finishes first: concurrent runs differed from serial ones (by up to 0.93 in a soft
layer, where a segment's survival flipped).

So sss-rt never changes the count around a single call. Every computation that calls BLAS runs
inside :func:`one_thread`: the first to enter (from any thread) limits every loaded BLAS to one
thread, the last to leave restores the limits it found; inside, sss-rt parallelizes on its own
threads over parts whose bounds never depend on the thread count (:func:`sss_rt.native.chunks`,
:func:`matmul`). Other code in the process meanwhile sees BLAS on one thread too (its speed, not
its results, changes). MKL loaded only for the segmentation's PARDISO is left alone: those
calls set their own count on the calling thread (:mod:`sss_rt.segmentation.pardiso`).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

_lock = threading.Lock()
_state: dict[str, Any] = {"depth": 0, "modules": -1, "controller": None}
_limited: dict[str, tuple[Any, int]] = {}  # path → (library, its count before), while depth > 0

#: columns per part of :func:`matmul` (a fixed count: each column's rounding depends on where
#: the BLAS kernel's tiles fall, so the parts must not move with the thread count)
MATMUL_COLUMNS = 4096


def _controller() -> Any:
    """threadpoolctl's view of the loaded libraries, made again when modules were imported
    since (a BLAS loaded later — SciPy's OpenBLAS on its first import — is seen too)."""
    from threadpoolctl import ThreadpoolController

    if _state["controller"] is None or _state["modules"] != len(sys.modules):
        _state["controller"], _state["modules"] = ThreadpoolController(), len(sys.modules)
    return _state["controller"]


def _set_threads(lib: Any, count: int) -> None:
    """Set a library's thread count from any Python thread. threadpoolctl's own setter lets
    only the first Python thread that set an OpenBLAS count change it while that thread lives
    (others are ignored without a word), so a count set by one service thread could never be
    restored by another; its unconditional setter is used where it has one."""
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(count)


@functools.cache
def _numpy_uses_mkl() -> bool:
    """Whether NumPy's or SciPy's BLAS is MKL (True where their build records cannot say); read
    once: every :func:`one_thread` entry asks."""
    try:
        import scipy

        names = [
            str(module.__config__.CONFIG["Build Dependencies"]["blas"]["name"])
            for module in (np, scipy)
        ]
    except Exception:  # an older or unusual build: assume it may be
        return True
    return any("mkl" in name.lower() for name in names)


def _managed(lib: Any) -> bool:
    """MKL loaded only for PARDISO is left alone: ``segmentation.pardiso`` sets its count for
    each call on the calling thread, and MKL's count set from one thread is not seen by the
    others (in its OpenMP builds), so a limit one thread set could not be undone by another."""
    return lib.internal_api != "mkl" or _numpy_uses_mkl()


def thread_counts() -> list[int]:
    """The thread count of each BLAS library :func:`one_thread` limits (NumPy's and SciPy's,
    not an MKL loaded only for PARDISO), as threadpoolctl reads it now."""
    from threadpoolctl import ThreadpoolController

    libraries = ThreadpoolController().select(user_api="blas").lib_controllers
    return [lib.num_threads for lib in libraries if _managed(lib)]


def _limit_new_libraries() -> None:
    for lib in _controller().select(user_api="blas").lib_controllers:
        if lib.filepath not in _limited and _managed(lib):
            _limited[lib.filepath] = (lib, lib.get_num_threads())
            _set_threads(lib, 1)


@contextmanager
def one_thread() -> Iterator[None]:
    """Every loaded BLAS on one thread inside the block, however many threads are inside such
    blocks at once (reentrant)."""
    with _lock:
        _state["depth"] += 1
        _limit_new_libraries()
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                for lib, count in _limited.values():
                    _set_threads(lib, count)
                _limited.clear()


def matmul(
    a: np.ndarray, b: np.ndarray, threads: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``a @ b`` (2-d) on sss-rt's threads, in parts of :data:`MATMUL_COLUMNS` columns of ``b``
    — the same result for any thread count where BLAS runs on one thread (:func:`one_thread`)."""
    from sss_rt import native

    n = b.shape[1]
    if out is None:
        out = np.empty((a.shape[0], n), np.result_type(a, b))
    parts = [(c, min(n, c + MATMUL_COLUMNS)) for c in range(0, n, MATMUL_COLUMNS)]
    native.each(parts, threads, lambda c0, c1: np.matmul(a, b[:, c0:c1], out=out[:, c0:c1]))
    return out


#: rows of the long side per part of :func:`inner` (fixed: the sums never depend on threads)
INNER_ROWS = 16384


def inner(
    a: np.ndarray, b: np.ndarray, threads: int | None = None, dtype: type | None = None
) -> np.ndarray:
    """``a.T @ b`` for tall a (N×p) and b (N×q) on sss-rt's threads: the products of fixed
    parts of :data:`INNER_ROWS` rows, added in order — the same result for any thread count
    where BLAS runs on one thread (:func:`one_thread`). ``dtype``: each part is converted to it
    before its product (no N-row copy of a or b in that type)."""
    from sss_rt import native

    n = a.shape[0]
    parts = [(r, min(n, r + INNER_ROWS)) for r in range(0, n, INNER_ROWS)]
    kind = dtype or np.result_type(a, b)
    partial = [np.empty((a.shape[1], b.shape[1]), kind) for _ in parts]

    def run(j: int, r0: int, r1: int) -> None:
        pa = a[r0:r1] if dtype is None else a[r0:r1].astype(dtype)
        pb = pa if b is a else b[r0:r1] if dtype is None else b[r0:r1].astype(dtype)
        np.matmul(pa.T, pb, out=partial[j])

    native.each([(j, *p) for j, p in enumerate(parts)], threads, run)
    out = partial[0]
    for part in partial[1:]:
        out += part
    return out
