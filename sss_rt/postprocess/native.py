"""The compiled CPU guided filter (``kernels/cpu_guided_filter.c``), driven over threads."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sss_rt.postprocess.guided_filter import GuideStats

try:
    from sss_rt.kernels import _cpu_guided_filter as _ext
except ImportError:  # built without a C compiler: the NumPy path is used instead
    _ext = None


def available() -> bool:
    """True when the compiled kernel was built with the package."""
    return _ext is not None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PlanarGuide:
    """Guide statistics in the planar layout the kernel reads (truncated-window rule only)."""

    guide: np.ndarray  # 3×H×W
    mean: np.ndarray  # 3×H×W
    inv_cov: np.ndarray  # 6×H×W
    inv_count: np.ndarray  # H×W
    radius: int

    @classmethod
    def from_stats(cls, stats: GuideStats) -> PlanarGuide:
        if stats.inv_count is None:
            raise ValueError("the compiled filter implements the truncated-window rule only")

        def planar(x: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32)

        return cls(
            planar(stats.guide),
            planar(stats.mean),
            planar(stats.inv_cov),
            np.ascontiguousarray(stats.inv_count, dtype=np.float32),
            stats.radius,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.inv_count.shape  # type: ignore[return-value]


class RowFilter:
    """Guided-filters bands of rows of C×H×W float32 channels, channels split over threads."""

    def __init__(self, guide: PlanarGuide, threads: int | None = None):
        if _ext is None:
            raise RuntimeError("the compiled guided filter is not available")
        self.guide = guide
        self.threads = threads or default_threads()
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> RowFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def filter(
        self, src: np.ndarray, y0: int = 0, y1: int | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Filtered rows ``y0:y1`` of every channel of ``src`` (C×H×W) as C×(y1−y0)×W."""
        g = self.guide
        h, w = g.shape
        y1 = h if y1 is None else y1
        src = np.ascontiguousarray(src, dtype=np.float32)
        if src.ndim != 3 or src.shape[1:] != (h, w):
            raise ValueError(f"channels must be C×{h}×{w}, got {src.shape}")
        c = src.shape[0]
        if out is None:
            out = np.empty((c, y1 - y0, w), np.float32)
        elif out.shape != (c, y1 - y0, w) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError("out must be a C-contiguous float32 C×(y1−y0)×W array")
        if c == 0:
            return out

        def run(c0: int, c1: int) -> None:
            _ext.filter_rows(
                src, g.guide, g.mean, g.inv_cov, g.inv_count, out,
                c, h, w, g.radius, y0, y1, c0, c1,
            )  # fmt: skip

        bounds = np.linspace(0, c, min(self.threads, c) + 1).astype(int)
        if self._pool is None or len(bounds) == 2:
            run(0, c)
        else:
            list(self._pool.map(run, bounds[:-1], bounds[1:]))
        return out
