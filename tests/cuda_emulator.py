"""Stand-ins for pycuda and CuPy that run the project's CUDA kernels on the CPU (test driver).

One emulator (:class:`Emulator`: one or more GPUs, each its own memory) has two faces, the
modules of pycuda (``emu.pycuda``: ``driver``, ``gpuarray``, ``compiler``) and of CuPy
(``emu.cupy``), so the project's real runtime classes (``sss_rt.cuda.pycuda_runtime``,
``sss_rt.cuda.cupy_runtime``) run on it unchanged: ``emu.runtime("pycuda")``. Both compile the
kernel source they are given — the same ``kernels/*.cu`` text a GPU gets — as C++ against
``kernels/emulation`` (grids, blocks, fiber threads with ``__syncthreads`` as a real barrier,
shared memory, ``__half``), with one generated wrapper per ``extern "C" __global__`` kernel.
Launches and copies are checked the way the GPU would refuse them, and more strictly:

- every argument against the kernel's C signature: ``int`` takes ``np.int32``, ``long long``
  ``np.int64``, ``float`` ``np.float32``, ``double`` ``np.float64``; a pointer takes a device
  allocation or ``np.uintp`` inside a live allocation of the current device, aligned for its
  element type, and — when the memory came from an array — of that element type (a float64
  array where the kernel takes ``float *`` fails). A Python ``int`` or a host array fails.
- the launch geometry against the device limits, and the dynamic shared memory against 48 KB
  unless the function's opt-in attribute was raised.
- after each launch, the guard bytes behind every live allocation (a write past the end of a
  buffer fails) and the shared-memory guards (in the runtime).
- contexts: in the pycuda face any allocation, copy, compile or launch on a thread with no
  pushed context fails with "invalid device context" (pycuda's rule); in both faces memory of
  one GPU used while another is current fails.

Device memory is host memory here, so kernels dereference the pointers directly; launches run
synchronously, in issue order, which is the order one CUDA stream guarantees. ``launches``
counts launches per kernel, so tests can require that every kernel ran.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import hashlib
import os
import re
import subprocess
import tempfile
import threading
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
    """One emulated device's memory."""

    def __init__(self, total: int, index: int = 0):
        self.total, self.index = total, index
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
    MULTIPROCESSOR_COUNT = "MULTIPROCESSOR_COUNT"


SM_COUNT = 132


class Function:
    """A kernel of a module, launched on the device ``current()`` names (the calling thread's
    context in the pycuda face, its current device in the CuPy face)."""

    def __init__(self, module: Module, lib: ctypes.CDLL, name: str, params: list[Param]):
        self.runtime, self.name, self.params = module.runtime, name, params
        self.current = module.current
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

    def _argument(self, i: int, p: Param, value: Any, memory: Memory) -> ctypes._SimpleCData:
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
        alloc = memory.find(address)
        if alloc is None:
            elsewhere = self.runtime.owner(address)
            if elsewhere is not None:
                raise LaunchError(
                    f"{where}: {address:#x} is memory of cuda:{elsewhere.index}, launched on "
                    f"cuda:{memory.index}"
                )
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
        memory = self.runtime.memories[self.current()]
        pairs = enumerate(zip(self.params, args, strict=True))
        values = [self._argument(i, p, v, memory) for i, (p, v) in pairs]
        block3 = (*(int(b) for b in block), 1, 1)[:3]
        grid3 = (*(int(g) for g in grid), 1, 1)[:3]
        if min(block3) < 1 or min(grid3) < 1:
            raise LaunchError(f"{self.name}: empty launch block={block3} grid={grid3}")
        if block3[0] * block3[1] * block3[2] > 1024 or block3[2] > 64:
            raise LaunchError(f"{self.name}: block {block3} exceeds the device's limits")
        if grid3[0] >= 1 << 31 or grid3[1] > self.runtime.max_grid_y or grid3[2] > 65535:
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
        memory.check_guards(self.name)
        self.runtime.launches[self.name] += 1


class Module:
    def __init__(self, runtime: Emulator, source: str, current: Any):
        self._lib = ctypes.CDLL(str(_build(source)))
        self._lib.emu_launch.restype = ctypes.c_int
        self.runtime, self.current = runtime, current
        self._signatures = signatures(source)
        self._functions: dict[str, Function] = {}

    def get_function(self, name: str) -> Function:
        if name not in self._signatures:
            raise LaunchError(f"no kernel named {name}")
        if name not in self._functions:
            self._functions[name] = Function(self, self._lib, name, self._signatures[name])
        return self._functions[name]


# -- streams, events, arrays -------------------------------------------------------------------
class Stream:
    """A stream (launches run at once, in issue order, as one stream orders them). ``with
    stream:`` makes it the thread's current stream (CuPy's way)."""

    _next = 1

    def __init__(self, flags: int = 0, non_blocking: bool = False, runtime: Any = None):
        self.handle = self.ptr = Stream._next
        Stream._next += 1
        self.waited: list[Event] = []
        self._runtime = runtime

    def synchronize(self) -> None:
        pass

    def is_done(self) -> bool:
        return True

    def wait_for_event(self, event: Event) -> None:
        if not event.recorded:
            raise LaunchError("waiting on an event that was never recorded")
        self.waited.append(event)

    wait_event = wait_for_event  # CuPy's name

    def __enter__(self) -> Stream:
        self._runtime._local.__dict__.setdefault("streams", []).append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._runtime._local.streams.pop()


class Event:
    def __init__(self, flags: int = 0, **kw: Any):
        self.recorded = False

    def record(self, stream: Stream | None = None) -> Event:
        self.recorded = True
        return self

    def synchronize(self) -> Event:
        return self

    def query(self) -> bool:
        return True


class _Array:
    """Device memory as an array (the pycuda GPUArray and the CuPy ndarray of the stand-ins),
    with ``__cuda_array_interface__``."""

    def __init__(self, memory: Memory, shape: Any, dtype: Any, allocation: Any = None,
                 strides: Any = None):  # fmt: skip
        self.shape = tuple(int(s) for s in (shape if isinstance(shape, tuple | list) else (shape,)))
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize
        self.allocation = allocation or DeviceAllocation(memory, self.nbytes, self.dtype)
        contiguous = tuple(
            self.dtype.itemsize * int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape))
        )
        self.strides = tuple(int(s) for s in (strides if strides is not None else contiguous))
        c_contig = self.strides == contiguous or self.size <= 1
        self.flags = SimpleNamespace(c_contiguous=c_contig, forc=c_contig)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        contiguous = self.flags.c_contiguous
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.allocation.address, False),
            "strides": None if contiguous else self.strides,
            "version": 3,
        }

    def _host_view(self) -> np.ndarray:
        base = self.allocation.buffer.view(self.dtype)
        return np.lib.stride_tricks.as_strided(base, self.shape, self.strides)

    def get(self, ary: np.ndarray | None = None, pagelocked: bool = False, stream=None):
        if ary is None:
            return np.array(self._host_view(), copy=True)
        ary[...] = self._host_view()
        return ary

    def set(self, ary: np.ndarray, stream: Any = None) -> None:
        if not self.flags.c_contiguous:
            raise LaunchError("set() into a non-contiguous array")
        self.allocation.buffer.view(self.dtype).reshape(self.shape)[...] = ary

    def transpose(self, axes: Any = None) -> Any:
        axes = tuple(reversed(range(len(self.shape)))) if axes is None else tuple(axes)
        return type(self)(
            self.allocation._memory,
            tuple(self.shape[a] for a in axes),
            self.dtype,
            self.allocation,
            tuple(self.strides[a] for a in axes),
        )

    @property
    def T(self) -> Any:
        return self.transpose()


class GPUArray(_Array):
    """pycuda.gpuarray.GPUArray."""

    @property
    def gpudata(self) -> DeviceAllocation:
        return self.allocation

    @property
    def ptr(self) -> int:
        return self.allocation.address

    def get_async(self, stream: Any = None, ary: np.ndarray | None = None) -> np.ndarray:
        return self.get(ary)

    def set_async(self, ary: np.ndarray, stream: Any = None) -> None:
        self.set(ary)


class CupyArray(_Array):
    """cupy.ndarray."""

    @property
    def data(self) -> SimpleNamespace:
        return SimpleNamespace(ptr=self.allocation.address, mem=self.allocation)


# -- the two faces -----------------------------------------------------------------------------
def _pycuda_face(rt: Emulator) -> SimpleNamespace:
    """pycuda's ``driver``, ``gpuarray`` and ``compiler`` modules on the emulator: a context
    must be pushed on the calling thread for any allocation, copy or launch (pycuda's rule)."""

    def current() -> int:
        stack = rt._local.__dict__.get("contexts")
        if not stack:
            raise LaunchError("invalid device context: no CUDA context is current on this thread")
        return stack[-1]

    def memory() -> Memory:
        return rt.memories[current()]

    def check(address: int, nbytes: int) -> np.ndarray:
        return rt.view(current(), int(address), nbytes)

    class Context:
        def __init__(self, index: int):
            self.index = index

        def push(self) -> None:
            rt._local.__dict__.setdefault("contexts", []).append(self.index)
            rt.pushes += 1

        @staticmethod
        def pop() -> None:
            stack = rt._local.__dict__.get("contexts")
            if not stack:
                raise LaunchError("pop with no context on this thread")
            stack.pop()

        @staticmethod
        def get_device() -> Device:
            return Device(current())

    class Device:
        def __init__(self, index: int):
            if not 0 <= index < len(rt.memories):
                raise LaunchError(f"invalid device ordinal {index}")
            self.index = index

        @staticmethod
        def count() -> int:
            return len(rt.memories)

        def name(self) -> str:
            return f"Emulated GPU {self.index}"

        def get_attribute(self, attribute: str) -> int:
            return {
                device_attribute.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: OPTIN_SHARED,
                device_attribute.MAX_SHARED_MEMORY_PER_BLOCK: DEFAULT_SHARED,
                device_attribute.MULTIPROCESSOR_COUNT: SM_COUNT,
            }[attribute]

        def compute_capability(self) -> tuple[int, int]:
            return (9, 0)

        def total_memory(self) -> int:
            return rt.memories[self.index].total

        def retain_primary_context(self) -> Context:
            return Context(self.index)

    def empty(shape: Any, dtype: Any) -> GPUArray:
        return GPUArray(memory(), shape, dtype)

    def to_gpu(ary: np.ndarray) -> GPUArray:
        a = GPUArray(memory(), ary.shape, ary.dtype)
        a.set(np.ascontiguousarray(ary))
        return a

    def zeros(shape: Any, dtype: Any) -> GPUArray:
        a = empty(shape, dtype)
        a.allocation.buffer.fill(0)
        return a

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any = None) -> None:
        src = np.ascontiguousarray(src)
        check(int(dest), src.nbytes)[...] = src.reshape(-1).view(np.uint8)

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any = None) -> None:
        if not dest.flags.c_contiguous:
            raise LaunchError("memcpy_dtoh into a non-contiguous host array")
        dest.reshape(-1).view(np.uint8)[...] = check(int(src), dest.nbytes)

    def memcpy_dtod_async(dest: Any, src: Any, size: int, stream: Any = None) -> None:
        check(int(dest), size)[...] = check(int(src), size)

    driver = SimpleNamespace(
        init=lambda flags=0: None,
        get_version=lambda: (12, 0, 0),
        Device=Device,
        Context=Context,
        Stream=lambda flags=0: Stream(flags, runtime=rt),
        Event=Event,
        function_attribute=function_attribute,
        device_attribute=device_attribute,
        mem_alloc=lambda nbytes: DeviceAllocation(memory(), int(nbytes)),
        mem_get_info=lambda: (memory().total - memory().used, memory().total),
        pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype),
        memcpy_htod_async=memcpy_htod_async,
        memcpy_dtoh_async=memcpy_dtoh_async,
        memcpy_dtod_async=memcpy_dtod_async,
        memcpy_htod=memcpy_htod_async,
        memcpy_dtoh=memcpy_dtoh_async,
    )
    gpuarray = SimpleNamespace(
        GPUArray=GPUArray,
        empty=empty,
        zeros=zeros,
        to_gpu=to_gpu,
        to_gpu_async=lambda ary, allocator=None, stream=None: to_gpu(ary),
    )

    def SourceModule(source: str, options: Any = None, no_extern_c: bool = False, **kw: Any):
        if not no_extern_c:
            raise LaunchError('the kernels declare extern "C" themselves: pass no_extern_c=True')
        current()  # compiling loads a module into the current context
        return Module(rt, source, current)

    return SimpleNamespace(driver=driver, gpuarray=gpuarray, compiler=SimpleNamespace(
        SourceModule=SourceModule))  # fmt: skip


def _cupy_face(rt: Emulator) -> SimpleNamespace:
    """CuPy's module on the emulator: a per-thread current device (0 until set) and stream."""

    def current() -> int:
        return rt._local.__dict__.get("cupy_device", 0)

    class Device:
        def __init__(self, index: int = 0):
            if not 0 <= index < len(rt.memories):
                raise LaunchError(f"invalid device ordinal {index}")
            self.id = index

        def __enter__(self) -> Device:
            self._previous = current()
            rt._local.cupy_device = self.id
            return self

        def __exit__(self, *exc: Any) -> None:
            rt._local.cupy_device = self._previous

    class RawKernel:
        def __init__(self, function: Function):
            self.function = function
            self._max_shared = DEFAULT_SHARED

        @property
        def max_dynamic_shared_size_bytes(self) -> int:
            return self._max_shared

        @max_dynamic_shared_size_bytes.setter
        def max_dynamic_shared_size_bytes(self, value: int) -> None:
            self.function.set_attribute(function_attribute.MAX_DYNAMIC_SHARED_SIZE_BYTES, value)
            self._max_shared = value

        def __call__(self, grid: tuple, block: tuple, args: tuple, *, shared_mem: int = 0):
            if not isinstance(args, tuple):
                raise LaunchError("CuPy kernels take their arguments as a tuple")
            native = [a.allocation if isinstance(a, CupyArray) else a for a in args]
            streams = rt._local.__dict__.get("streams") or [None]
            self.function(*native, block=block, grid=grid, shared=shared_mem, stream=streams[-1])

    class RawModule:
        def __init__(self, code: str, options: tuple = (), backend: str = "nvrtc", **kw: Any):
            if "-O3" in options:
                raise LaunchError("NVRTC does not take -O3")
            self.code, self._module = code, None

        def get_function(self, name: str) -> RawKernel:
            if self._module is None:
                self._module = Module(rt, self.code, current)
            return RawKernel(self._module.get_function(name))

    def memcpy_async(dst: int, src: int, size: int, kind: int, stream: int) -> None:
        device = current()
        if kind == 1:  # host → device
            rt.view(device, dst, size)[...] = np.ctypeslib.as_array(
                (ctypes.c_uint8 * size).from_address(src)
            )
        elif kind == 2:  # device → host
            np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(dst))[...] = rt.view(
                device, src, size
            )
        elif kind == 3:
            rt.view(device, dst, size)[...] = rt.view(device, src, size)
        else:
            raise LaunchError(f"unknown memcpy kind {kind}")

    def properties(index: int) -> dict[str, Any]:
        Device(index)
        return {
            "name": f"Emulated GPU {index}".encode(),
            "sharedMemPerBlockOptin": OPTIN_SHARED,
            "major": 9,
            "minor": 0,
            "multiProcessorCount": SM_COUNT,
            "totalGlobalMem": rt.memories[index].total,
        }

    runtime = SimpleNamespace(
        getDeviceCount=lambda: len(rt.memories),
        getDeviceProperties=properties,
        memGetInfo=lambda: (
            rt.memories[current()].total - rt.memories[current()].used,
            rt.memories[current()].total,
        ),
        memcpyAsync=memcpy_async,
    )
    cuda = SimpleNamespace(
        Device=Device,
        Stream=lambda non_blocking=False: Stream(non_blocking=non_blocking, runtime=rt),
        Event=Event,
        runtime=runtime,
        alloc_pinned_memory=lambda nbytes: bytearray(nbytes),
    )
    pool = SimpleNamespace(free_bytes=lambda: 0)
    return SimpleNamespace(
        __version__="emulated",
        cuda=cuda,
        RawModule=RawModule,
        empty=lambda shape, dtype=np.float64: CupyArray(rt.memories[current()], shape, dtype),
        get_default_memory_pool=lambda: pool,
        ndarray=CupyArray,
    )


class Emulator:
    """``devices`` emulated GPUs of ``memory_bytes`` each, seen through pycuda
    (:attr:`pycuda`) or CuPy (:attr:`cupy`) stand-ins; :meth:`runtime` builds the project's
    own runtime class on either."""

    name = "emulated"

    def __init__(
        self,
        memory_bytes: int = 8 << 30,
        workers: int | None = None,
        devices: int = 1,
        max_grid_y: int = 65535,
    ):
        self.max_grid_y = max_grid_y  #: a GPU's limit; smaller to test the launcher's bands
        self.memories = [Memory(memory_bytes, i) for i in range(devices)]
        self.workers = workers or min(2, os.cpu_count() or 1)
        self.launches: Counter[str] = Counter()
        self.max_shared_optin = OPTIN_SHARED
        self.pushes = 0
        self._local = threading.local()
        self.pycuda = _pycuda_face(self)
        self.cupy = _cupy_face(self)

    @property
    def memory(self) -> Memory:
        return self.memories[0]

    def owner(self, address: int) -> Memory | None:
        for m in self.memories:
            if m.find(address) is not None:
                return m
        return None

    def view(self, device: int, address: int, nbytes: int) -> np.ndarray:
        memory = self.memories[device]
        if memory.find(address) is None and self.owner(address) is not None:
            raise LaunchError(f"copy at {address:#x}: memory of another device than cuda:{device}")
        return memory.view(address, nbytes)

    def runtime(self, kind: str = "pycuda", index: int = 0) -> Any:
        """``sss_rt.cuda``'s runtime class for ``kind`` on this emulator's GPU ``index``."""
        if kind == "pycuda":
            from sss_rt.cuda.pycuda_runtime import PycudaRuntime

            return PycudaRuntime(index, modules=self.pycuda)
        if kind == "cupy":
            from sss_rt.cuda.cupy_runtime import CupyRuntime

            return CupyRuntime(index, cupy=self.cupy)
        raise ValueError(kind)

    @contextlib.contextmanager
    def context(self, index: int = 0):
        """Push GPU ``index``'s context on this thread (the pycuda face) for the block."""
        ctx = self.pycuda.driver.Device(index).retain_primary_context()
        ctx.push()
        try:
            yield
        finally:
            self.pycuda.driver.Context.pop()
