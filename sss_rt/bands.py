"""Feature bands: what a backend hands to the post-processing.

A :class:`FeatureSource` is one image's network features, C×H×W float32, given out band by
band: ``rows(y0, y1)`` is C×(y1−y0)×W. Backends that split the network (its low-resolution
trunk once, the full-resolution head on demand) compute each band when asked, so no mode ever
holds the 128 channels of a large image; a whole-graph run, or features a caller already has,
is an :class:`ArraySource` whose bands are views. The post-processing modes read every source
the same way, in bounded memory.

Layouts, stated once: bands are C×n×W float32 (C-contiguous where a kernel needs it, a view
otherwise); ``projected_rows`` is k×n×W float32, ``components · (features − shift)`` summed in
float64; ``region`` is C×(y1−y0)×(x1−x0).

Device bands: ``device_band(y0, y1, runtime, stream)`` is the same band in GPU memory, a
:class:`DeviceBand` (C×n×W, float32 or float16, rows contiguous per channel) ready in the
order of ``stream``. Any source has one — a host band is uploaded on that stream — and a source
whose features live on the GPU (a TensorRT binding, a PyTorch CUDA tensor, an ONNX Runtime CUDA
output) gives out its own memory or computes the band on that stream, so that nothing crosses
to the host. ``runtime`` is the CUDA runtime the post-processing drives (:mod:`sss_rt.cuda`:
pycuda or CuPy, or the test suite's emulation of either).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np

from sss_rt import native

_BLOCK_PIXELS = 1 << 14


class FeatureSource(abc.ABC):
    """One image's C×H×W features, computed (or read) for any band of rows on demand.

    What a backend hands to the post-processing (module docstring: layouts and device bands).
    Subclasses give ``rows``; the rest has defaults in terms of it.

    Attributes
    ----------
    channels, height, width : int
        C, H, W.
    in_memory : bool
        Every band is a view of one array in memory (no halo needed).
    on_device : bool
        The features live in GPU memory (``device_band`` copies nothing).

    Examples
    --------
    >>> import numpy as np
    >>> from sss_rt.bands import as_source
    >>> source = as_source(np.zeros((128, 4, 6), np.float32))
    >>> source.shape, source.rows(1, 3).shape
    ((128, 4, 6), (128, 2, 6))
    """

    height: int
    width: int
    channels: int
    #: True when every band is a view of one array in memory: bands then need no halo and
    #: the post-processing may read the whole array at once (``array``)
    in_memory: bool = False
    #: True when the features live in GPU memory (``device_band`` then copies nothing)
    on_device: bool = False

    @abc.abstractmethod
    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Features of rows ``y0:y1``: C×(y1−y0)×W float32."""

    def projected_rows(
        self,
        y0: int,
        y1: int,
        components: np.ndarray,
        shift: np.ndarray,
        threads: int | None = None,
    ) -> np.ndarray:
        """``components · (features − shift)`` of rows ``y0:y1``: k×n×W float32.

        Sums in float64; a source that can fold the projection into its last layer overrides
        this.
        """
        return project(self.rows(y0, y1), components, shift, threads)

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Features of a rectangle: C×(y1−y0)×(x1−x0) float32."""
        return self.rows(y0, y1)[:, :, x0:x1]

    @property
    def nbytes(self) -> int:
        """Size of all the features as float32."""
        return self.channels * self.height * self.width * 4

    def materialize(self) -> FeatureSource:
        """All rows computed once and held (C×H×W float32): an in-memory source."""
        return ArraySource(np.ascontiguousarray(self.rows(0, self.height), dtype=np.float32))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return (self.channels, self.height, self.width)

    def device_band(self, y0: int, y1: int, runtime: Any, stream: Any) -> DeviceBand:
        """Rows ``y0:y1`` in GPU memory, ready in ``stream``'s order (here: uploaded)."""
        band = runtime.upload(np.ascontiguousarray(self.rows(y0, y1), np.float32), stream)
        return DeviceBand(band.ptr, (self.channels, y1 - y0, self.width), band.dtype, band)


class ComputedSource(FeatureSource):
    """Features computed for any rectangle on demand (a network head evaluated on the host).

    The post-processing's projection is folded into the last layer where asked: subclasses
    give ``_compute(y0, y1, x0, x1, project)``, ``project`` being ``(components, shift)``
    (k×C, C) or None; it returns C×(y1−y0)×(x1−x0) float32 (k× with ``project``).
    """

    @abc.abstractmethod
    def _compute(
        self, y0: int, y1: int, x0: int, x1: int, project: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        """The features (or their projection) of rows ``y0:y1``, columns ``x0:x1``."""

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """C×(y1−y0)×W float32, computed."""
        return self._compute(y0, y1, 0, self.width, None)

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """C×(y1−y0)×(x1−x0) float32, computed."""
        return self._compute(y0, y1, x0, x1, None)

    def projected_rows(
        self,
        y0: int,
        y1: int,
        components: np.ndarray,
        shift: np.ndarray,
        threads: int | None = None,
    ) -> np.ndarray:
        """The projection folded into the last layer: no C-channel band is formed."""
        return self._compute(y0, y1, 0, self.width, (components, shift))


@dataclass
class DeviceBand:
    """C×n×W features in GPU memory at ``pointer``.

    Each channel's n×W rows are contiguous, channel c at ``pointer + c·ld`` elements (``ld`` =
    n·W when 0); ``owner`` keeps the memory alive.
    """

    pointer: int
    shape: tuple[int, int, int]
    dtype: np.dtype
    owner: Any = None
    ld: int = 0

    @property
    def stride(self) -> int:
        """Elements from one channel's first element to the next's."""
        return self.ld or self.shape[1] * self.shape[2]

    def to_host(self, runtime: Any, r0: int, r1: int, stream: Any) -> np.ndarray:
        """Rows ``r0:r1`` of every channel: C×(r1−r0)×W page-locked host memory.

        In the band's dtype: one asynchronous copy per channel on ``stream``, then one wait.
        """
        c, _, w = self.shape
        item = np.dtype(self.dtype).itemsize
        host = runtime.pinned((c, r1 - r0, w), self.dtype)
        for ch in range(c):
            start = self.pointer + (ch * self.stride + r0 * w) * item
            runtime.copy_to_host(host[ch], start, stream)
        stream.synchronize()
        return host


class DeviceArraySource(FeatureSource):
    """C×H×W features already in GPU memory (C-contiguous at ``pointer``, float32 or float16).

    Device bands are offsets into it; host bands are copied out. ``ready``: an event the
    producer recorded on its own stream after writing them (waited on before any read);
    ``owner``: whatever keeps the memory alive; ``runtime``: the :mod:`sss_rt.cuda` runtime
    that copies host bands out.
    """

    on_device = True

    def __init__(
        self,
        pointer: int,
        shape: tuple[int, int, int],
        dtype: Any,
        runtime: Any,
        *,
        ready: Any = None,
        owner: Any = None,
    ):
        self.pointer, self.dtype, self.runtime = int(pointer), np.dtype(dtype), runtime
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f"device features must be float32 or float16, got {self.dtype}")
        self.channels, self.height, self.width = (int(s) for s in shape)
        self.ready, self.owner = ready, owner
        self._stream: Any = None  # for host copies, made when first needed

    def _wait(self, stream: Any) -> None:
        if self.ready is not None:
            stream.wait(self.ready)

    def device_band(self, y0: int, y1: int, runtime: Any, stream: Any) -> DeviceBand:
        """Rows ``y0:y1``: an offset into the array, after the producer's event."""
        self._wait(stream)
        offset = y0 * self.width * self.dtype.itemsize
        shape = (self.channels, y1 - y0, self.width)
        return DeviceBand(self.pointer + offset, shape, self.dtype, self, self.height * self.width)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """C×(y1−y0)×W float32, copied to the host."""
        with self.runtime.activate():
            if self._stream is None:
                self._stream = self.runtime.stream()
            band = self.device_band(y0, y1, self.runtime, self._stream)
            return np.asarray(band.to_host(self.runtime, 0, y1 - y0, self._stream), np.float32)


class ArraySource(FeatureSource):
    """Features already in memory (a whole-graph run, or a caller's array)."""

    in_memory = True

    def __init__(self, features: np.ndarray):
        if features.ndim != 3:
            raise ValueError(f"features must be C×H×W, got shape {features.shape}")
        self.array = np.ascontiguousarray(features, dtype=np.float32)
        self.channels, self.height, self.width = self.array.shape

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """A view of rows ``y0:y1``."""
        return self.array[:, y0:y1]

    def materialize(self) -> ArraySource:
        """Itself: already in memory."""
        return self


def as_source(features: np.ndarray | FeatureSource) -> FeatureSource:
    """A source for C×H×W features given either way."""
    return features if isinstance(features, FeatureSource) else ArraySource(features)


def project(
    features: np.ndarray,
    components: np.ndarray,
    shift: np.ndarray,
    threads: int | None = None,
    compiled: bool | None = None,
) -> np.ndarray:
    """``components · (features − shift)`` per pixel of C×H×W float32 features: k×H×W float32.

    Products in float64: with these features one direction often carries 10⁴–10⁵× the variance
    of the next, and float32 sums lose the weak ones. ``compiled``: use the compiled kernel
    (default: when it is built).
    """
    if native.available() and compiled is not False:
        return native.project(features, components, shift, threads)
    c, h, w = features.shape
    flat = features.reshape(c, h * w)
    out = np.empty((components.shape[0], h * w), np.float32)
    for start in range(0, h * w, _BLOCK_PIXELS):
        block = flat[:, start : start + _BLOCK_PIXELS].astype(np.float64)
        block -= np.asarray(shift, np.float64)[:, None]
        out[:, start : start + _BLOCK_PIXELS] = components @ block
    return out.reshape(-1, h, w)
