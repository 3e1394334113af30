"""Large scratch arrays kept between calls, per thread.

Fresh memory costs the kernel's zeroing (and, for the huge pages NumPy asks for, compaction) on
first touch: at 768×1024×128 the exact mode's 128 MB band and 88 MB guide tables took 10–15% of
its time when they were allocated anew for every image. Arrays handed out here stay with the
calling thread and are handed out again to the next call with the same key, up to ``LIMIT``
bytes per thread in all; a request that does not fit gets a fresh array that is not kept.
``release()`` frees the calling thread's arrays.
"""

from __future__ import annotations

import math
import threading

import numpy as np

LIMIT = 256 << 20

_local = threading.local()


def _pool() -> dict[str, np.ndarray]:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    return pool


def array(key: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array for ``key``: the same memory as the previous call on
    this thread with that key whenever it is large enough. The caller must be done with the
    previous one (each key belongs to one place in the code)."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    pool = _pool()
    buf = pool.get(key)
    if buf is None or buf.nbytes < nbytes:
        pool.pop(key, None)
        buf = np.empty(max(nbytes, 1), np.uint8)
        if sum(b.nbytes for b in pool.values()) + buf.nbytes <= LIMIT:
            pool[key] = buf
    return buf[:nbytes].view(dtype).reshape(shape)


def held() -> int:
    """Bytes kept for the calling thread."""
    return sum(b.nbytes for b in _pool().values())


def release() -> None:
    """Free the calling thread's scratch arrays."""
    _pool().clear()
