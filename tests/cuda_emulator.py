"""A stand-in for pycuda that runs the project's CUDA kernels on the CPU (test driver).

``SourceModule`` compiles the kernel source it is given — the same ``kernels/*.cu`` text pycuda
gets — as C++ against ``kernels/emulation`` (grids, blocks, fiber threads with ``__syncthreads``
as a real barrier, shared memory, ``__half``), with one generated wrapper per ``extern "C"
__global__`` kernel. Its functions check each launch the way the GPU would refuse it, and more
strictly than pycuda does:

- every argument against the kernel's C signature: ``int`` takes ``np.int32``, ``long long``
  ``np.int64``, ``float`` ``np.float32``, ``double`` ``np.float64``; a pointer takes a device
  allocation or ``np.uintp`` inside a live allocation, aligned for its element type, and — when
  the memory came from a ``GPUArray`` — of that element type (a float64 array where the kernel
  takes ``float *`` fails). A Python ``int`` or a host array fails.
- the launch geometry against the device limits, and the dynamic shared memory against 48 KB
  unless the function's opt-in attribute was raised.
- after each launch, the guard bytes behind every live allocation (a write past the end of a
  buffer fails) and the shared-memory guards (in the runtime).

Device memory is host memory here, so kernels dereference the pointers directly; launches run
synchronously, in issue order, which is the order one CUDA stream guarantees. ``launches``
counts launches per kernel, so tests can require that every kernel ran.
"""

from __future__ import annotations

import bisect
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

EMULATION = Path(__file__).resolve().parents[1] / "kernels" / "emulation"
GUARD = 64  #: bytes after each allocation, checked after every launch
GUARD_BYTE = 0x5A
DEFAULT_SHARED = 48 << 10
OPTIN_SHARED = 227 << 10  # sm_90's opt-in limit per block

SCALARS = {
    "int": np.int32,
    "unsigned int": np.uint32,
    "long long": np.int64,
    "float": np.float32,
    "double": np.float64,
}
ELEMENTS = {
    "float": np.float32,
    "double": np.float64,
    "__half": np.float16,
    "unsigned char": np.uint8,
    "int": np.int32,
}


class LaunchError(RuntimeError):
    """A launch the GPU would refuse or get wrong."""


@dataclass(frozen=True)
class Param:
    ctype: str  # e.g. "const float *" or "int"
    name: str

    @property
    def pointer(self) -> bool:
        return self.ctype.endswith("*")

    @property
    def element(self) -> str:
        return self.ctype.rstrip("*").replace("const", "").strip()


def signatures(source: str) -> dict[str, list[Param]]:
    """The ``extern "C" __global__`` kernels of ``source`` and their parameters."""
    out: dict[str, list[Param]] = {}
    for m in re.finditer(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', source):
        params = []
        for raw in m.group(2).split(","):
            decl = " ".join(raw.replace("__restrict__", " ").split())
            pm = re.fullmatch(r"(.*?)\s*(\**)\s*(\w+)", decl)
            if pm is None:
                raise ValueError(f"cannot parse parameter {raw!r} of {m.group(1)}")
            base, stars, name = pm.groups()
            params.append(Param(f"{base} {stars}".strip() if stars else base, name))
        out[m.group(1)] = params
    return out


# -- memory ------------------------------------------------------------------------------------
class DeviceAllocation:
    """Emulated device memory: host bytes, 256-byte aligned, with guard bytes behind them."""

    def __init__(self, memory: Memory, nbytes: int, dtype: Any = None):
        self._raw = np.empty(nbytes + GUARD + 256, np.uint8)
        start = (-self._raw.ctypes.data) % 256
        self.buffer = self._raw[start : start + nbytes]
        self._guard = self._raw[start + nbytes : start + nbytes + GUARD]
        self.buffer.fill(0xFF)  # uninitialized device memory reads as NaN, never as zeros
        self._guard.fill(GUARD_BYTE)
        self.address = int(self.buffer.ctypes.data)
        self.nbytes = nbytes
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self._memory = memory
        memory.register(self)

    def __int__(self) -> int:
        return self.address

    def __index__(self) -> int:
        return self.address

    def free(self) -> None:
        self._memory.unregister(self)

    def reset_guard(self) -> None:
        self._guard.fill(GUARD_BYTE)

    def guard_intact(self) -> bool:
        return bool((self._guard == GUARD_BYTE).all())


class Memory:
    def __init__(self, total: int):
        self.total = total
        self._starts: list[int] = []
        self._live: dict[int, DeviceAllocation] = {}

    @property
    def used(self) -> int:
        return sum(a.nbytes for a in self._live.values())

    def register(self, a: DeviceAllocation) -> None:
        if self.used + a.nbytes > self.total:
            raise MemoryError(f"emulated device out of memory ({a.nbytes} bytes asked)")
        bisect.insort(self._starts, a.address)
        self._live[a.address] = a

    def unregister(self, a: DeviceAllocation) -> None:
        if self._live.pop(a.address, None) is not None:
            self._starts.remove(a.address)

    def find(self, address: int) -> DeviceAllocation | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        a = self._live[self._starts[i]]
        return a if address < a.address + max(a.nbytes, 1) else None

    def check_guards(self, after: str) -> None:
        for a in self._live.values():
            if not a.guard_intact():
                a.reset_guard()  # reported once; later launches are checked afresh
                raise LaunchError(f"{after} wrote past the end of a {a.nbytes}-byte allocation")

    def view(self, address: int, nbytes: int) -> np.ndarray:
        a = self.find(address)
        if a is None or address + nbytes > a.address + a.nbytes:
            raise LaunchError(f"copy of {nbytes} bytes at {address:#x} leaves device memory")
        off = address - a.address
        return a.buffer[off : off + nbytes]


# -- kernels -----------------------------------------------------------------------------------
def _build(source: str) -> Path:
    parts = [source]
    for p in sorted(EMULATION.rglob("*")):
        if p.is_file():
            parts.append(p.read_text())
    key = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"sss-rt-cuda-emulation-{key}"
    lib = out / "kernels.so"
    if lib.is_file():
        return lib
    out.mkdir(parents=True, exist_ok=True)
    (out / "kernels.cu").write_text(source)
    wrappers = ['#include "cuda_emulation.h"', '#include "kernels.cu"']
    for name, params in signatures(source).items():
        unpack = ", ".join(f"*({p.ctype} *)v[{i}]" for i, p in enumerate(params))
        wrappers.append(
            f"static void body_{name}(void *a) {{ void **v = (void **)a; {name}({unpack}); }}\n"
            f'extern "C" void *emu_kernel_{name}(void) {{ return (void *)&body_{name}; }}'
        )
    (out / "wrappers.cpp").write_text("\n".join(wrappers) + "\n")
    tmp = out / f"kernels.{os.getpid()}.so"
    cmd = [
        os.environ.get("CXX", "g++"),
        "-std=c++17", "-O2", "-fPIC", "-shared", "-pthread", "-Wall", "-Werror",
        "-Wno-unused-function", f"-I{EMULATION / 'include'}", f"-I{out}",
        str(out / "wrappers.cpp"), str(EMULATION / "runtime.cpp"), "-o", str(tmp),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the emulated kernels do not compile:\n{done.stderr}")
    os.replace(tmp, lib)
    return lib


class function_attribute:
    MAX_DYNAMIC_SHARED_SIZE_BYTES = "MAX_DYNAMIC_SHARED_SIZE_BYTES"


class device_attribute:
    MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN"
    MAX_SHARED_MEMORY_PER_BLOCK = "MAX_SHARED_MEMORY_PER_BLOCK"


class Function:
    def __init__(self, runtime: Emulator, lib: ctypes.CDLL, name: str, params: list[Param]):
        self.runtime, self.name, self.params = runtime, name, params
        getter = getattr(lib, f"emu_kernel_{name}")
        getter.restype = ctypes.c_void_p
        self._body = getter()
        self._launch = lib.emu_launch
        self._max_shared = DEFAULT_SHARED
        self._needs_barriers = True  # until a launch shows otherwise

    def set_attribute(self, attribute: str, value: int) -> None:
        if attribute != function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES:
            raise NotImplementedError(attribute)
        if value > OPTIN_SHARED:
            raise LaunchError(f"{self.name}: {value} bytes of shared memory exceed the opt-in")
        self._max_shared = int(value)

    def _argument(self, i: int, p: Param, value: Any) -> ctypes._SimpleCData:
        where = f"{self.name} argument {i} ({p.ctype} {p.name})"
        if not p.pointer:
            want = SCALARS.get(p.ctype)
            if want is None:
                raise LaunchError(f"{where}: the emulator does not know this type")
            if type(value) is not want:
                raise LaunchError(
                    f"{where}: passed {type(value).__name__}, the kernel takes {p.ctype} "
                    f"(np.{np.dtype(want).name})"
                )
            return {
                np.int32: ctypes.c_int32,
                np.uint32: ctypes.c_uint32,
                np.int64: ctypes.c_int64,
                np.float32: ctypes.c_float,
                np.float64: ctypes.c_double,
            }[want](value.item())
        if isinstance(value, DeviceAllocation):
            address = value.address
        elif type(value) is np.uintp:
            address = int(value)
        else:
            raise LaunchError(
                f"{where}: passed {type(value).__name__}; a pointer argument takes a device "
                "allocation or np.uintp"
            )
        alloc = self.runtime.memory.find(address)
        if alloc is None:
            raise LaunchError(f"{where}: {address:#x} is not in live device memory")
        element = ELEMENTS.get(p.element)
        if element is None:
            raise LaunchError(f"{where}: the emulator does not know element type {p.element}")
        if address % np.dtype(element).itemsize:
            raise LaunchError(f"{where}: {address:#x} is not aligned for {p.element}")
        if alloc.dtype is not None and alloc.dtype != np.dtype(element):
            raise LaunchError(
                f"{where}: the memory holds {alloc.dtype.name}, the kernel reads {p.element}"
            )
        return ctypes.c_void_p(address)

    def __call__(
        self,
        *args: Any,
        block: tuple[int, ...],
        grid: tuple[int, ...] = (1, 1),
        shared: int = 0,
        stream: Any = None,
    ) -> None:
        if len(args) != len(self.params):
            raise LaunchError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        pairs = enumerate(zip(self.params, args, strict=True))
        values = [self._argument(i, p, v) for i, (p, v) in pairs]
        block3 = (*(int(b) for b in block), 1, 1)[:3]
        grid3 = (*(int(g) for g in grid), 1, 1)[:3]
        if min(block3) < 1 or min(grid3) < 1:
            raise LaunchError(f"{self.name}: empty launch block={block3} grid={grid3}")
        if block3[0] * block3[1] * block3[2] > 1024 or block3[2] > 64:
            raise LaunchError(f"{self.name}: block {block3} exceeds the device's limits")
        if grid3[0] >= 1 << 31 or grid3[1] > 65535 or grid3[2] > 65535:
            raise LaunchError(f"{self.name}: grid {grid3} exceeds the device's limits")
        if shared > self._max_shared:
            raise LaunchError(
                f"{self.name}: {shared} bytes of dynamic shared memory exceed "
                f"{self._max_shared} (raise MAX_DYNAMIC_SHARED_SIZE_BYTES first)"
            )
        if stream is not None and not isinstance(stream, Stream):
            raise LaunchError(f"{self.name}: stream must be a Stream, got {type(stream)}")
        arg_array = (ctypes.c_void_p * len(values))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values]
        )
        error = ctypes.create_string_buffer(512)
        synced = ctypes.c_int(0)
        rc = self._launch(
            ctypes.c_void_p(self._body),
            arg_array,
            (ctypes.c_uint * 3)(*grid3),
            (ctypes.c_uint * 3)(*block3),
            ctypes.c_size_t(int(shared)),
            ctypes.c_int(self.runtime.workers),
            ctypes.c_int(1 if self._needs_barriers else 0),
            ctypes.byref(synced),
            error,
            ctypes.c_size_t(len(error)),
        )
        if rc != 0:
            raise LaunchError(f"{self.name}: {error.value.decode()}")
        self._needs_barriers = bool(synced.value)
        self.runtime.memory.check_guards(self.name)
        self.runtime.launches[self.name] += 1


class Module:
    def __init__(self, runtime: Emulator, source: str):
        self._lib = ctypes.CDLL(str(_build(source)))
        self._lib.emu_launch.restype = ctypes.c_int
        self._runtime = runtime
        self._signatures = signatures(source)
        self._functions: dict[str, Function] = {}

    def get_function(self, name: str) -> Function:
        if name not in self._signatures:
            raise LaunchError(f"no kernel named {name}")
        if name not in self._functions:
            self._functions[name] = Function(self._runtime, self._lib, name, self._signatures[name])
        return self._functions[name]


# -- streams, copies, arrays -------------------------------------------------------------------
class Stream:
    _next = 1

    def __init__(self, flags: int = 0):
        self.handle = Stream._next
        Stream._next += 1
        self.waited: list[Event] = []

    def synchronize(self) -> None:
        pass

    def is_done(self) -> bool:
        return True

    def wait_for_event(self, event: Event) -> None:
        if not event.recorded:
            raise LaunchError("waiting on an event that was never recorded")
        self.waited.append(event)


class Event:
    def __init__(self, flags: int = 0):
        self.recorded = False

    def record(self, stream: Stream | None = None) -> Event:
        self.recorded = True
        return self

    def synchronize(self) -> Event:
        return self

    def query(self) -> bool:
        return True


class GPUArray:
    def __init__(
        self, runtime: Emulator, shape: Any, dtype: Any, gpudata: Any = None, strides: Any = None
    ):
        self._runtime = runtime
        self.shape = tuple(int(s) for s in (shape if isinstance(shape, tuple | list) else (shape,)))
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        self.gpudata = gpudata or DeviceAllocation(runtime.memory, self.nbytes, self.dtype)
        contiguous = np.empty(0, self.dtype).itemsize * np.array(
            [int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape))]
        )
        self.strides = tuple(int(s) for s in (strides if strides is not None else contiguous))
        c_contig = self.strides == tuple(int(s) for s in contiguous) or self.size <= 1
        self.flags = SimpleNamespace(c_contiguous=c_contig, forc=c_contig)

    @property
    def ptr(self) -> int:
        return int(self.gpudata)

    def _host_view(self) -> np.ndarray:
        base = self.gpudata.buffer.view(self.dtype)
        return np.lib.stride_tricks.as_strided(base, self.shape, self.strides)

    def get(self, ary: np.ndarray | None = None, pagelocked: bool = False, stream=None):
        out = np.array(self._host_view(), copy=True) if ary is None else ary
        if ary is not None:
            ary[...] = self._host_view()
        return out

    def get_async(self, stream: Any = None, ary: np.ndarray | None = None) -> np.ndarray:
        return self.get(ary)

    def set(self, ary: np.ndarray) -> None:
        if not self.flags.c_contiguous:
            raise LaunchError("set() into a non-contiguous GPUArray")
        self.gpudata.buffer.view(self.dtype).reshape(self.shape)[...] = ary

    def set_async(self, ary: np.ndarray, stream: Any = None) -> None:
        self.set(ary)

    def transpose(self, axes: Any = None) -> GPUArray:
        axes = tuple(reversed(range(len(self.shape)))) if axes is None else tuple(axes)
        return GPUArray(
            self._runtime,
            tuple(self.shape[a] for a in axes),
            self.dtype,
            self.gpudata,
            tuple(self.strides[a] for a in axes),
        )

    @property
    def T(self) -> GPUArray:
        return self.transpose()


class Emulator:
    """What ``sss_rt.postprocess.cuda`` takes from pycuda (``runtime=``), on the CPU."""

    name = "emulated"

    def __init__(self, memory_bytes: int = 8 << 30, workers: int | None = None):
        self.memory = Memory(memory_bytes)
        self.workers = workers or min(2, os.cpu_count() or 1)
        self.launches: Counter[str] = Counter()
        self.max_shared_optin = OPTIN_SHARED
        rt = self

        class _Array:  # pycuda.gpuarray
            @staticmethod
            def empty(shape: Any, dtype: Any) -> GPUArray:
                return GPUArray(rt, shape, dtype)

            @staticmethod
            def zeros(shape: Any, dtype: Any) -> GPUArray:
                a = GPUArray(rt, shape, dtype)
                a.gpudata.buffer.fill(0)
                return a

            @staticmethod
            def to_gpu(ary: np.ndarray) -> GPUArray:
                a = GPUArray(rt, ary.shape, ary.dtype)
                a.set(np.ascontiguousarray(ary))
                return a

            @staticmethod
            def to_gpu_async(ary: np.ndarray, allocator: Any = None, stream: Any = None):
                return _Array.to_gpu(ary)

            GPUArray = GPUArray

        class _Driver:  # pycuda.driver
            Stream = Stream
            Event = Event
            function_attribute = function_attribute
            device_attribute = device_attribute
            DeviceAllocation = DeviceAllocation

            @staticmethod
            def mem_alloc(nbytes: int) -> DeviceAllocation:
                return DeviceAllocation(rt.memory, int(nbytes))

            @staticmethod
            def mem_get_info() -> tuple[int, int]:
                return rt.memory.total - rt.memory.used, rt.memory.total

            @staticmethod
            def pagelocked_empty(shape: Any, dtype: Any) -> np.ndarray:
                return np.empty(shape, dtype)

            @staticmethod
            def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any = None) -> None:
                src = np.ascontiguousarray(src)
                rt.memory.view(int(dest), src.nbytes)[...] = src.reshape(-1).view(np.uint8)

            @staticmethod
            def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any = None) -> None:
                if not dest.flags.c_contiguous:
                    raise LaunchError("memcpy_dtoh into a non-contiguous host array")
                dest.reshape(-1).view(np.uint8)[...] = rt.memory.view(int(src), dest.nbytes)

            @staticmethod
            def memcpy_dtod_async(dest: Any, src: Any, size: int, stream: Any = None) -> None:
                rt.memory.view(int(dest), size)[...] = rt.memory.view(int(src), size)

            memcpy_htod = memcpy_htod_async
            memcpy_dtoh = memcpy_dtoh_async

        self.drv = _Driver
        self.gpuarray = _Array

    def SourceModule(  # pycuda's name
        self, source: str, options: Any = None, no_extern_c: bool = False, **kw: Any
    ) -> Module:
        if not no_extern_c:
            raise LaunchError('the kernels declare extern "C" themselves: pass no_extern_c=True')
        return Module(self, source)
