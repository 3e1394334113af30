"""The CUDA runtime on CuPy (see :mod:`sss_rt.cuda` for the interface).

CuPy ships wheels per CUDA major version (``cupy-cuda12x``, ``cupy-cuda13x``) and compiles the
kernels with NVRTC at run time, so no compiler is needed; ``nvcc`` is tried when NVRTC refuses
the source. :meth:`CupyRuntime.activate` makes the device current on the calling thread for the
block (CuPy's per-thread current device, the primary context).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from sss_rt.cuda.base import DeviceArray
from sss_rt.errors import BackendUnavailableError

OPTIONS = ("-std=c++17",)
HOST_TO_DEVICE, DEVICE_TO_HOST, DEVICE_TO_DEVICE = 1, 2, 3  # cudaMemcpyKind


def _import_cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the CuPy CUDA runtime needs CuPy ({exc}): pip install 'sss-rt[cuda12]' (or "
            "cuda13, matching the driver's CUDA major version)"
        ) from None
    return cupy


class _Stream:
    def __init__(self, native: Any):
        self.native = native
        self.handle = int(native.ptr)

    def synchronize(self) -> None:
        self.native.synchronize()

    def wait(self, event: Any) -> None:
        self.native.wait_event(event)


class _Kernel:
    def __init__(self, runtime: CupyRuntime, native: Any, name: str):
        self.runtime, self.native, self.name = runtime, native, name

    def allow_shared(self, nbytes: int) -> None:
        self.native.max_dynamic_shared_size_bytes = int(nbytes)

    def __call__(
        self, *args: Any, block: tuple, grid: tuple, shared: int = 0, stream: _Stream
    ) -> None:
        native = tuple(a.native if isinstance(a, DeviceArray) else a for a in args)
        with stream.native:  # CuPy launches on the thread's current stream
            self.native(tuple(grid), tuple(block), native, shared_mem=int(shared))


class _Module:
    def __init__(self, runtime: CupyRuntime, source: str):
        self.runtime, self.source = runtime, source
        self._native: Any = None

    def _load(self, name: str) -> Any:
        cp = self.runtime.cupy
        if self._native is None:
            module = cp.RawModule(code=self.source, options=OPTIONS)
            try:
                module.get_function(name)  # NVRTC compiles here
            except Exception as nvrtc_error:  # e.g. a header NVRTC does not ship
                try:
                    module = cp.RawModule(code=self.source, options=OPTIONS, backend="nvcc")
                    module.get_function(name)
                except Exception:
                    raise nvrtc_error from None
            self._native = module
        return self._native.get_function(name)

    def function(self, name: str) -> _Kernel:
        return _Kernel(self.runtime, self._load(name), name)


class CupyRuntime:
    """GPU ``index`` through CuPy. ``cupy``: the module to use (default: the installed CuPy;
    the test suite passes its CPU stand-in)."""

    name = "cupy"

    def __init__(self, index: int = 0, cupy: Any = None):
        self.cupy = cp = cupy if cupy is not None else _import_cupy()
        self.index = int(index)
        try:
            count = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CuPy present, no driver or no GPU
            raise BackendUnavailableError(f"no usable CUDA GPU for CuPy: {exc}") from None
        if self.index >= count:
            raise BackendUnavailableError(f"cuda:{self.index} requested but {count} GPU(s) exist")
        self._props = props = cp.cuda.runtime.getDeviceProperties(self.index)
        name = props["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self.max_shared_optin = int(props["sharedMemPerBlockOptin"])

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        with self.cupy.cuda.Device(self.index):
            yield

    def compile(self, source: str) -> _Module:
        return _Module(self, source)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        native = self.cupy.empty(tuple(shape), dtype=np.dtype(dtype))
        return DeviceArray(int(native.data.ptr), tuple(shape), np.dtype(dtype), native)

    def upload(self, host: np.ndarray, stream: _Stream) -> DeviceArray:
        host = np.ascontiguousarray(host)
        array = self.empty(host.shape, host.dtype)
        self.copy_from_host(array.ptr, host, stream)
        array.keep = host  # alive until the copy has run (the array's life)
        return array

    def download(self, array: DeviceArray, stream: _Stream) -> np.ndarray:
        host = self.pinned(array.shape, array.dtype)
        self.copy_to_host(host, array.ptr, stream)
        return host

    def _copy(self, dst: int, src: int, nbytes: int, kind: int, stream: _Stream) -> None:
        self.cupy.cuda.runtime.memcpyAsync(int(dst), int(src), int(nbytes), kind, stream.handle)

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: _Stream) -> None:
        if not host.flags.c_contiguous:
            raise ValueError("copies to the host need a C-contiguous array")
        self._copy(host.ctypes.data, pointer, host.nbytes, DEVICE_TO_HOST, stream)

    def copy_from_host(self, pointer: int, host: np.ndarray, stream: _Stream) -> None:
        host = np.ascontiguousarray(host)
        self._copy(pointer, host.ctypes.data, host.nbytes, HOST_TO_DEVICE, stream)

    def copy_device(self, dst: int, src: int, nbytes: int, stream: _Stream) -> None:
        self._copy(dst, src, nbytes, DEVICE_TO_DEVICE, stream)

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        memory = self.cupy.cuda.alloc_pinned_memory(max(count * dtype.itemsize, 1))
        return np.frombuffer(memory, dtype, count).reshape(shape)

    def stream(self) -> _Stream:
        return _Stream(self.cupy.cuda.Stream(non_blocking=True))

    def record(self, stream: _Stream) -> Any:
        """An event recorded on ``stream`` now (``other.wait(event)`` orders after it)."""
        event = self.cupy.cuda.Event()
        event.record(stream.native)
        return event

    def free_memory(self) -> int:
        """Free device memory plus what CuPy's pool holds unused (it is ours to reuse)."""
        free = int(self.cupy.cuda.runtime.memGetInfo()[0])
        return free + int(self.cupy.get_default_memory_pool().free_bytes())

    def properties(self) -> dict[str, Any]:
        p = self._props
        return {
            "gpu_name": self.device_name,
            "compute_capability": f"{p['major']}{p['minor']}",
            "sm_count": int(p["multiProcessorCount"]),
            "gpu_memory_mb": int(p["totalGlobalMem"]) // (1 << 20),
        }

    def describe(self) -> str:
        return f"CuPy {self.cupy.__version__} on {self.device_name}"
