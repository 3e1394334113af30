"""The CUDA runtime on pycuda (see :mod:`sss_rt.cuda` for the interface).

pycuda compiles with the toolkit's ``nvcc`` at run time and must itself be built against the
toolkit (``benchmarks/pycuda_siteconf.py`` writes the build configuration). The device's primary
context is pushed by :meth:`PycudaRuntime.activate` on the calling thread and popped when the
block ends, so any thread may call in and none exits with a context pushed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np

from sss_rt.cuda.base import DeviceArray
from sss_rt.errors import BackendUnavailableError

OPTIONS = ["-O3", "-std=c++17"]


def _import_pycuda() -> SimpleNamespace:
    try:
        import pycuda.compiler as compiler
        import pycuda.driver as driver
        import pycuda.gpuarray as gpuarray
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the pycuda CUDA runtime needs pycuda ({exc}): pip install 'sss-rt[gpu]' (it "
            "builds against the CUDA toolkit), or use CuPy (pip install 'sss-rt[cuda12]')"
        ) from None
    return SimpleNamespace(driver=driver, gpuarray=gpuarray, compiler=compiler)


class _Stream:
    def __init__(self, native: Any):
        self.native = native
        self.handle = int(native.handle)

    def synchronize(self) -> None:
        self.native.synchronize()

    def wait(self, event: Any) -> None:
        self.native.wait_for_event(event)


class _Kernel:
    def __init__(self, runtime: PycudaRuntime, native: Any, name: str):
        self.runtime, self.native, self.name = runtime, native, name

    def allow_shared(self, nbytes: int) -> None:
        attr = self.runtime.drv.function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES
        self.native.set_attribute(attr, int(nbytes))

    def __call__(
        self, *args: Any, block: tuple, grid: tuple, shared: int = 0, stream: _Stream
    ) -> None:
        native = [a.native.gpudata if isinstance(a, DeviceArray) else a for a in args]
        self.native(
            *native, block=tuple(block), grid=tuple(grid), shared=int(shared), stream=stream.native
        )


class _Module:
    def __init__(self, runtime: PycudaRuntime, native: Any):
        self.runtime, self.native = runtime, native

    def function(self, name: str) -> _Kernel:
        return _Kernel(self.runtime, self.native.get_function(name), name)


class PycudaRuntime:
    """GPU ``index`` through pycuda. ``modules``: the pycuda modules to use (``driver``,
    ``gpuarray``, ``compiler``; default: the installed pycuda — the test suite passes its
    CPU stand-in)."""

    name = "pycuda"

    def __init__(self, index: int = 0, modules: Any = None):
        mods = modules if modules is not None else _import_pycuda()
        self.drv, self.gpuarray, self.compiler = mods.driver, mods.gpuarray, mods.compiler
        self.index = int(index)
        try:
            self.drv.init()
            count = self.drv.Device.count()
        except Exception as exc:  # pycuda present, no driver
            raise BackendUnavailableError(f"no usable CUDA driver for pycuda: {exc}") from None
        if self.index >= count:
            raise BackendUnavailableError(f"cuda:{self.index} requested but {count} GPU(s) exist")
        self.device = self.drv.Device(self.index)
        self.context = self.device.retain_primary_context()
        self.device_name = str(self.device.name())
        self.max_shared_optin = int(
            self.device.get_attribute(self.drv.device_attribute.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        )

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self.context.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def compile(self, source: str) -> _Module:
        return _Module(
            self, self.compiler.SourceModule(source, no_extern_c=True, options=list(OPTIONS))
        )

    def empty(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray:
        native = self.gpuarray.empty(tuple(shape), np.dtype(dtype))
        return DeviceArray(int(native.gpudata), tuple(shape), np.dtype(dtype), native)

    def upload(self, host: np.ndarray, stream: _Stream) -> DeviceArray:
        host = np.ascontiguousarray(host)
        native = self.gpuarray.to_gpu_async(host, stream=stream.native)
        return DeviceArray(int(native.gpudata), host.shape, host.dtype, native)

    def download(self, array: DeviceArray, stream: _Stream) -> np.ndarray:
        host = self.pinned(array.shape, array.dtype)
        self.drv.memcpy_dtoh_async(host, array.native.gpudata, stream.native)
        return host

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: _Stream) -> None:
        self.drv.memcpy_dtoh_async(host, int(pointer), stream.native)

    def copy_from_host(self, pointer: int, host: np.ndarray, stream: _Stream) -> None:
        self.drv.memcpy_htod_async(int(pointer), host, stream.native)

    def copy_device(self, dst: int, src: int, nbytes: int, stream: _Stream) -> None:
        self.drv.memcpy_dtod_async(int(dst), int(src), int(nbytes), stream.native)

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self.drv.pagelocked_empty(tuple(shape), np.dtype(dtype))

    def stream(self) -> _Stream:
        return _Stream(self.drv.Stream())

    def record(self, stream: _Stream) -> Any:
        """An event recorded on ``stream`` now (``other.wait(event)`` orders after it)."""
        event = self.drv.Event()
        event.record(stream.native)
        return event

    def free_memory(self) -> int:
        return int(self.drv.mem_get_info()[0])

    def properties(self) -> dict[str, Any]:
        major, minor = self.device.compute_capability()
        sms = self.device.get_attribute(self.drv.device_attribute.MULTIPROCESSOR_COUNT)
        return {
            "gpu_name": self.device_name,
            "compute_capability": f"{major}{minor}",
            "sm_count": int(sms),
            "gpu_memory_mb": int(self.device.total_memory()) // (1 << 20),
        }

    def describe(self) -> str:
        return f"pycuda {self.drv.get_version()} on {self.device_name}"
