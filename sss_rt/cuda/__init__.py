"""CUDA runtimes: the one interface the GPU code (post-processing kernels, device bands,
TensorRT) drives, with a module per library behind it.

A runtime is one GPU (``index``) seen through one library — :mod:`pycuda
<sss_rt.cuda.pycuda_runtime>` (built against the CUDA toolkit) or :mod:`CuPy
<sss_rt.cuda.cupy_runtime>` (wheels per CUDA major version, no compiler needed). Both use the
device's primary context, the one PyTorch, ONNX Runtime and TensorRT use. :func:`cuda_runtime`
picks one per device and process: pycuda where it imports, else CuPy; the environment variable
``SSS_RT_CUDA_RUNTIME`` (``pycuda`` or ``cupy``) forces one.

Every runtime offers (layouts are NumPy's, C order):

``activate()``
    A context manager making the device current on the calling thread for the block's
    duration, and only then (no context stays pushed on any thread). Every call into the
    runtime from any thread happens inside one.
``compile(source)`` → module; ``module.function(name)`` → kernel
    ``kernel(*args, block=, grid=, shared=0, stream=)`` launches on ``stream``; arguments are
    NumPy scalars of the C parameter's exact type (``np.int32`` for ``int``, ``np.int64`` for
    ``long long``, ``np.float32``, ``np.float64``), :class:`DeviceArray` or ``np.uintp``
    pointers. ``kernel.allow_shared(nbytes)`` opts in to more dynamic shared memory.
``empty(shape, dtype)``, ``upload(host, stream)`` → :class:`DeviceArray`
``download(array, stream)`` → host array (valid after ``stream.synchronize()``)
``copy_to_host(host, pointer, stream)``, ``copy_from_host(pointer, host, stream)``,
``copy_device(dst, src, nbytes, stream)``: asynchronous copies on ``stream``
``pinned(shape, dtype)``: page-locked host memory
``stream()`` → :class:`Stream`; ``record(stream)`` → an event recorded there, for
``other_stream.wait(event)``
``free_memory()``: free bytes on the device; ``properties()``: name, compute capability,
SM count, memory; ``device_name``, ``max_shared_optin``.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from typing import Any

from sss_rt.cuda.base import DeviceArray, Stream
from sss_rt.errors import BackendUnavailableError

#: runtime name → the package it needs, in the order ``auto`` tries them
RUNTIMES: dict[str, str] = {"pycuda": "pycuda", "cupy": "cupy"}
ENV = "SSS_RT_CUDA_RUNTIME"

_cache: dict[tuple[str, int], Any] = {}
_lock = threading.Lock()


def requested_runtime() -> str:
    """The runtime ``SSS_RT_CUDA_RUNTIME`` asks for (``auto`` when unset)."""
    name = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if name != "auto" and name not in RUNTIMES:
        raise BackendUnavailableError(
            f"{ENV}={name!r} is not a CUDA runtime; use one of auto, {', '.join(RUNTIMES)}"
        )
    return name


def installed_runtimes() -> list[str]:
    """The runtimes whose package is installed (without importing them)."""
    return [name for name, package in RUNTIMES.items() if importlib.util.find_spec(package)]


def runtime_name() -> str:
    """The runtime :func:`cuda_runtime` would use: the forced one, else the first installed."""
    name = requested_runtime()
    if name != "auto":
        return name
    found = installed_runtimes()
    if not found:
        raise BackendUnavailableError(
            "GPU post-processing needs pycuda or CuPy: pip install 'sss-rt[cuda12]' (CuPy for "
            "CUDA 12; cuda13 for CUDA 13) or 'sss-rt[gpu]' (pycuda, builds against the CUDA "
            "toolkit), or use --device cpu"
        )
    return found[0]


def cuda_runtime(index: int = 0, name: str | None = None) -> Any:
    """The runtime of GPU ``index`` (one per library, device and process)."""
    name = name or runtime_name()
    key = (name, int(index))
    with _lock:
        if key not in _cache:
            _cache[key] = _create(name, int(index))
        return _cache[key]


def _create(name: str, index: int) -> Any:
    if name == "pycuda":
        from sss_rt.cuda.pycuda_runtime import PycudaRuntime

        return PycudaRuntime(index)
    if name == "cupy":
        from sss_rt.cuda.cupy_runtime import CupyRuntime

        return CupyRuntime(index)
    raise BackendUnavailableError(
        f"unknown CUDA runtime {name!r}; use one of {', '.join(RUNTIMES)}"
    )


__all__ = [
    "ENV",
    "RUNTIMES",
    "DeviceArray",
    "Stream",
    "cuda_runtime",
    "installed_runtimes",
    "requested_runtime",
    "runtime_name",
]
