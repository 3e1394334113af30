"""The values every CUDA runtime hands out (:mod:`sss_rt.cuda` states the interface)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class DeviceArray:
    """Device memory at ``ptr`` holding a C-contiguous ``shape`` of ``dtype``; ``native`` is
    the library's object (it keeps the memory alive)."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    native: Any
    keep: Any = None  #: host memory an asynchronous copy still reads

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


class Stream(Protocol):
    handle: int  #: the ``cudaStream_t`` value (for PyTorch's ExternalStream, TensorRT)

    def synchronize(self) -> None: ...

    def wait(self, event: Any) -> None: ...
