"""The compiled CPU kernels (``kernels/cpu_guided_filter.c``), driven over threads: the guided
filter and its guide statistics, float64 moments and projection, box means, the fast mode's
upsampled output, and the network head's full-resolution rows."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from sss_rt.resample import int32_taps, linear_taps

try:
    from sss_rt.kernels import _cpu_guided_filter as _ext
except ImportError:  # built without a C compiler: the NumPy path is used instead
    _ext = None


def available() -> bool:
    """True when the compiled kernel was built with the package."""
    return _ext is not None


def variants() -> list[tuple[str, int]]:
    """The kernel variants this CPU runs, widest first, as ``(name, channels per vector)``."""
    return [] if _ext is None else [tuple(v) for v in _ext.variants()]


def describe() -> str:
    """One line for ``sss-rt info``: the variant in use, or why there is none."""
    if _ext is None:
        return "numpy (no compiled kernel)"
    name, lanes = variants()[0]
    return f"native ({name}, {lanes} channels per vector)"


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PackedGuide:
    """Guide statistics in the layout the kernel reads (truncated-window rule only): float64,
    interleaved per pixel, so that each step of the filter reads one stream."""

    pixel: np.ndarray  # H×W×4: the guide I0, I1, I2 in [0, 1] and 1 / N(x)
    coef: np.ndarray  # H×W×10: 1 / N(x), window mean of I (3), (Σ + εU)⁻¹ (00 01 02 11 12 22)
    radius: int

    @classmethod
    def compute(
        cls,
        guide: np.ndarray,
        radius: int,
        eps: float,
        threads: int | None = None,
        out: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> PackedGuide:
        """Statistics of an H×W×3 guide in [0, 1], computed by the compiled kernel (bands of
        rows over ``threads``); ``out``: H×W×4 and H×W×10 float64 arrays to fill."""
        if _ext is None:
            raise RuntimeError("the compiled kernel is not available")
        h, w, _ = guide.shape
        planes = np.ascontiguousarray(np.moveaxis(guide, -1, 0), dtype=np.float64)
        if out is None:
            out = (np.empty((h, w, 4), np.float64), np.empty((h, w, 10), np.float64))
        pixel, coef = out
        split(h, min(threads or default_threads(), max(1, h // (4 * radius + 8))),
              lambda y0, y1: _ext.guide_stats(planes, pixel, coef, h, w, radius, float(eps),
                                              y0, y1))  # fmt: skip
        return cls(pixel, coef, radius)

    def rows(self, a: int, b: int) -> PackedGuide:
        """Rows a..b−1 of the tables."""
        return PackedGuide(
            np.ascontiguousarray(self.pixel[a:b]), np.ascontiguousarray(self.coef[a:b]), self.radius
        )

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixel.shape[:2]  # type: ignore[return-value]


T = TypeVar("T")

#: most parts of a moments reduction (:func:`chunks`: fixed bounds, partial sums in order)
MOMENT_PARTS = 64

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> ThreadPoolExecutor:
    """The process-wide pool (starting threads per call costs ~1.5 ms each, several times per
    image). It starts threads only as concurrent jobs need them, up to its generous bound."""
    global _pool
    with _pool_lock:
        if _pool is None:
            bound = max(32, 4 * default_threads())
            _pool = ThreadPoolExecutor(bound, thread_name_prefix="sss-rt")
        return _pool


def beside(run: Callable[..., T], *args: object) -> Future[T]:
    """``run(*args)`` on the shared pool while the caller goes on (its result, or its
    exception, from the returned future)."""
    return _workers().submit(run, *args)


def parallel(run: Callable[..., object], jobs: Sequence[tuple]) -> None:
    """``run(*job)`` for every job at once: the first on the calling thread, the others on the
    shared pool (the kernels release the GIL). Exceptions propagate."""
    if not jobs:
        return
    futures = [_workers().submit(run, *job) for job in jobs[1:]]
    try:
        run(*jobs[0])
    finally:
        for f in futures:
            f.result()


def split(n: int, threads: int, run: Callable[[int, int], object]) -> None:
    """``run(a, b)`` over ``threads`` contiguous parts of ``range(n)`` (for work whose every
    output is computed whole by one part: reductions use :func:`chunks` and :func:`each`)."""
    threads = max(1, min(threads, n))
    bounds = [int(b) for b in np.linspace(0, n, threads + 1)]
    parallel(run, list(itertools.pairwise(bounds)))


def chunks(n: int, most: int, least: int = 4096) -> list[tuple[int, int]]:
    """Contiguous parts of ``range(n)`` for a reduction: at most ``most`` parts of at least
    ``least`` items, their bounds a function of ``n`` alone — never of the thread count, so
    that the partial sums, added in part order, round the same on any machine and thread count."""
    count = max(1, min(most, n // max(1, least)))
    bounds = [int(b) for b in np.linspace(0, n, count + 1)]
    return list(itertools.pairwise(bounds))


def each(jobs: Sequence[tuple], threads: int | None, run: Callable[..., object]) -> None:
    """``run(*job)`` for every job, on at most ``threads`` threads at once (the calling thread
    among them); which thread runs a job never changes what it computes."""
    workers = max(1, min(threads or default_threads(), len(jobs)))

    def worker(w: int) -> None:
        for job in jobs[w::workers]:
            run(*job)

    parallel(worker, [(w,) for w in range(workers)])


def moments(
    q: np.ndarray,
    shift: np.ndarray,
    threads: int | None = None,
    variant: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Σd (C,) and Σddᵀ (C, C) over the columns of C×N float32 ``q``, d = column − shift,
    summed in float64."""
    if _ext is None:
        raise RuntimeError("the compiled kernel is not available")
    q = np.ascontiguousarray(q, dtype=np.float32)
    shift = np.ascontiguousarray(shift, dtype=np.float64)
    if q.ndim != 2 or shift.shape != (q.shape[0],):
        raise ValueError("q must be C×N and shift (C,)")
    c, n = q.shape
    parts = chunks(n, MOMENT_PARTS)
    grams = np.zeros((len(parts), c, c), np.float64)
    sums = np.zeros((len(parts), c), np.float64)

    def run(i: int, a: int, b: int) -> None:
        _ext.moments_rows(q, shift, grams[i], sums[i], c, n, a, b, variant)

    each([(i, a, b) for i, (a, b) in enumerate(parts)], threads, run)
    lower = np.tril(grams.sum(axis=0))  # entries [j][i], i ≤ j, are the complete ones
    return sums.sum(axis=0), lower + np.tril(lower, -1).T


def shrink(planes: np.ndarray, s: int, threads: int | None = None) -> np.ndarray:
    """Means of the s×s blocks of C×H×W float32 planes (H and W multiples of s):
    C×(H/s)×(W/s)."""
    if _ext is None:
        raise RuntimeError("the compiled kernel is not available")
    c, h, w = planes.shape
    if h % s or w % s:
        raise ValueError(f"{h}×{w} is not a multiple of {s}")
    src = np.ascontiguousarray(planes, dtype=np.float32)
    out = np.empty((c, h // s, w // s), np.float32)
    split(c, threads or default_threads(),
           lambda c0, c1: _ext.shrink_planes(src, out, c, h, w, s, c0, c1))  # fmt: skip
    return out


def apply_upsampled(means: np.ndarray, guide: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Σᵢ up(mean aᵢ)·Iᵢ + up(mean b) for 4×K×h×w coefficient means (a₀, a₁, a₂, b) and an
    H×W×3 float32 guide, upsampling bilinearly (half-pixel centres, clamped edges): K×H×W."""
    if _ext is None:
        raise RuntimeError("the compiled kernel is not available")
    means = np.ascontiguousarray(means, dtype=np.float32)
    guide = np.ascontiguousarray(guide, dtype=np.float32)
    _, k, h, w = means.shape
    big_h, big_w = guide.shape[:2]
    ys = int32_taps(linear_taps(big_h, h))
    xs = int32_taps(linear_taps(big_w, w))
    out = np.empty((k, big_h, big_w), np.float32)
    split(big_h, threads or default_threads(),
           lambda y0, y1: _ext.apply_upsampled(means, guide, out, *ys, *xs, k, h, w, big_h, big_w,
                                               0, k, y0, y1))  # fmt: skip
    return out


def project(
    features: np.ndarray, components: np.ndarray, shift: np.ndarray, threads: int | None = None
) -> np.ndarray:
    """``components · (features − shift)`` per pixel of C×H×W float32 features, summed in
    float64; k×H×W float32."""
    if _ext is None:
        raise RuntimeError("the compiled kernel is not available")
    c, h, w = features.shape
    src = np.ascontiguousarray(features, dtype=np.float32)
    comp = np.ascontiguousarray(components, dtype=np.float64)
    shift = np.ascontiguousarray(shift, dtype=np.float64)
    if comp.ndim != 2 or comp.shape[1] != c or shift.shape != (c,):
        raise ValueError(f"components must be k×{c} and shift ({c},)")
    k, n = comp.shape[0], h * w
    out = np.empty((k, h, w), np.float32)
    split(n, min(threads or default_threads(), n // 4096 or 1),
           lambda x0, x1: _ext.project_rows(src, comp, shift, out, c, k, n, x0, x1))  # fmt: skip
    return out


def hidden_rows(
    t_in: np.ndarray,
    fuse_input: np.ndarray,
    bias: np.ndarray,
    ups: tuple[tuple, tuple],
    y0: int,
    n: int,
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Rows ``y0:y0+n`` of ReLU(fuse_input·t_in + up₁ + up₂ + bias): C×n×W float32
    (into ``out`` if given: reusing a buffer spares the page faults of a fresh one).

    ``t_in`` is cin×H×W; each of ``ups`` is ``(block C×rows×w, yi0, yi1, yw, xi0, xi1, xw)``:
    a low-resolution block and its bilinear taps (int32 rows of the block and float32 weights
    for the n output rows; int32 columns and float32 weights for the W output columns).
    """
    if _ext is None:
        raise RuntimeError("the compiled kernel is not available")
    cin, h, w = t_in.shape
    c = fuse_input.shape[0]
    if out is None:
        out = np.empty((c, n, w), np.float32)
    elif out.shape != (c, n, w) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 {c}×{n}×{w} array")
    args = [(*tuple(up), up[0].shape[1], up[0].shape[2]) for up in ups]
    split(c, threads or default_threads(),
           lambda c0, c1: _ext.hidden_rows(t_in, fuse_input, bias, out, *args, cin, w, h, y0, n,
                                           c0, c1))  # fmt: skip
    return out


def head_variants() -> list[str]:
    """The fused head kernels this CPU and OS run (``amx-bf16``: AMX tiles, the tile state
    granted by Linux; ``avx512-bf16``: VDPBF16PS; ``avx512-vnni-int8``: the hidden layer in
    uint8, VPDPBUSD); empty without any."""
    return [] if _ext is None else list(_ext.head_variants())


def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 → bf16 bit patterns (uint16), rounded to nearest even, as the kernels round."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@dataclass(frozen=True)
class PackedHead:
    """A head conv (M×K) and bias in the kernels' layout: bf16 A tiles [Mt][K/32][16][32]
    (output channels padded to a multiple of 32 with zeros) and a padded float32 bias; for
    the int8 kernel, the weights as int8 [Mt·16][K] with a scale per output channel
    (max |w| / 127: w ≈ int8 · scale)."""

    tiles: np.ndarray  # uint16
    bias: np.ndarray  # float32 (Mt·16,)
    channels: int  # M
    inputs: int  # K
    int8: np.ndarray  # int8 (Mt·16, K)
    int8_scale: np.ndarray  # float32 (Mt·16,)

    @classmethod
    def pack(cls, weight: np.ndarray, bias: np.ndarray) -> PackedHead:
        m, k = weight.shape
        if k % 32:
            raise ValueError(f"the head's input channels must be a multiple of 32, got {k}")
        mp = -(-m // 32) * 32
        w = np.zeros((mp, k), np.float32)
        w[:m] = weight
        tiles = to_bf16(w).reshape(mp // 16, 16, k // 32, 32).transpose(0, 2, 1, 3)
        b = np.zeros(mp, np.float32)
        b[:m] = bias
        scale = (np.abs(w).max(axis=1) / 127.0).astype(np.float32)
        q = np.rint(w / np.where(scale > 0, scale, 1.0)[:, None]).astype(np.int8)
        return cls(np.ascontiguousarray(tiles), b, m, k, q, scale)


def head_rows_bf16(
    t_in: np.ndarray,
    fuse_input: np.ndarray,
    fuse_bias: np.ndarray,
    head: PackedHead,
    ups: tuple[tuple, tuple],
    y0: int,
    n: int,
    threads: int | None = None,
    out: np.ndarray | None = None,
    variant: str | None = None,
    out_row: int = 0,
) -> np.ndarray:
    """Rows ``y0:y0+n`` of head · ReLU(fuse_input·t_in + up₁ + up₂ + fuse_bias) + bias, the
    hidden layer rounded to bf16 and multiplied in bf16 with fp32 sums (fused, see
    ``kernels/cpu_head_bf16.h``) — or, with ``variant="avx512-vnni-int8"``, quantized to uint8
    per pixel (scale: the pixel's max over the 512 channels / 255) and multiplied by the int8
    weights with int32 sums; arguments as :func:`hidden_rows`, split over ``threads`` by
    rows. ``out``: C-contiguous float32 M×rows×W, written at rows ``out_row:out_row+n``
    (default: a new M×n×W array). ``variant``: one of :func:`head_variants` (default: the
    first)."""
    found = head_variants()
    if not found:
        raise RuntimeError("this CPU has no bf16 unit the compiled head can use")
    variant = variant or found[0]
    cin, h, w = t_in.shape
    if out is None:
        out = np.empty((head.channels, n, w), np.float32)
    ok = out.ndim == 3 and out.shape[0] == head.channels and out.shape[2] == w
    if not (ok and out.dtype == np.float32 and out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous float32 {head.channels}×rows×{w} array")
    if not 0 <= out_row <= out.shape[1] - n:
        raise ValueError("out has too few rows")
    args = [(*tuple(up), up[0].shape[1], up[0].shape[2]) for up in ups]
    if variant == "avx512-vnni-int8":
        weights, biases = head.int8, np.concatenate([head.bias, head.int8_scale])
    else:
        weights, biases = head.tiles, head.bias
    threads = max(1, min(threads or default_threads(), n))
    # bands of rows handed out as threads free up: a thread slowed by the other load on its core
    # takes fewer (measured at 1 MP: 10% of the time was one thread waiting for the other)
    bounds = [int(b) for b in np.linspace(0, n, min(n, 4 * threads) + 1)]
    bands = iter(list(itertools.pairwise(bounds)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                band = next(bands, None)
            if band is None:
                return
            _ext.head_rows_bf16(
                t_in, fuse_input, fuse_bias, weights, biases, out, *args, cin, w, h, y0,
                n, head.inputs, head.channels, band[0], band[1], variant, out.shape[1], out_row,
            )  # fmt: skip

    parallel(work, [()] * threads)
    return out


class RowFilter:
    """Guided-filters bands of rows of C×H×W float32 channels over threads.

    Work is split by channel groups of the kernel's vector width; with fewer groups than
    threads (e.g. the 3 projected channels) it is split by bands of rows instead.
    """

    def __init__(self, guide: PackedGuide, threads: int | None = None, variant: str | None = None):
        if _ext is None:
            raise RuntimeError("the compiled guided filter is not available")
        names = dict(variants())
        if variant is not None and variant not in names:
            raise ValueError(f"kernel variant {variant!r} not available here; have {list(names)}")
        self._explicit = variant
        self.variant = variant or variants()[0][0]
        self.lanes = dict(variants())[self.variant]
        self.guide = guide
        self.threads = threads or default_threads()

    def close(self) -> None:
        """Nothing to release (the threads are the process-wide pool's); kept for ``with``."""

    def __enter__(self) -> RowFilter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def filter(
        self,
        src: np.ndarray,
        y0: int = 0,
        y1: int | None = None,
        out: np.ndarray | None = None,
        coefficients: bool = False,
    ) -> np.ndarray:
        """Filtered rows ``y0:y1`` of every channel of ``src`` (C×H×W) as C×(y1−y0)×W; with
        ``coefficients``, the window means of a₀, a₁, a₂ and b instead, as 4×C×(y1−y0)×W (the
        filtered output is Σᵢ mean(aᵢ)·Iᵢ + mean(b))."""
        g = self.guide
        h, w = g.shape
        y1 = h if y1 is None else y1
        src = np.ascontiguousarray(src, dtype=np.float32)
        if src.ndim != 3 or src.shape[1:] != (h, w):
            raise ValueError(f"channels must be C×{h}×{w}, got {src.shape}")
        c = src.shape[0]
        lead = (4,) if coefficients else ()
        if out is None:
            out = np.empty((*lead, c, y1 - y0, w), np.float32)
        elif (
            out.shape != (*lead, c, y1 - y0, w)
            or out.dtype != np.float32
            or not out.flags.c_contiguous
        ):
            raise ValueError(f"out must be a C-contiguous float32 {lead}+C×(y1−y0)×W array")
        if c == 0:
            return out

        def run(c0: int, c1: int, r0: int, r1: int) -> None:
            # rows r0..r1 of the band land in out[..., r0-y0 : r1-y0, :]
            dst = out if (r0, r1) == (y0, y1) else np.empty((*lead, c, r1 - r0, w), np.float32)
            _ext.filter_rows(
                src, g.pixel, g.coef, dst, c, h, w, g.radius, r0, r1, c0, c1, variant,
                coefficients,
            )  # fmt: skip
            if dst is not out:
                out[..., c0:c1, r0 - y0 : r1 - y0, :] = dst[..., c0:c1, :, :]

        variant, lanes = self.variant, self.lanes
        for name, width in variants():  # few channels: a narrower vector wastes fewer lanes
            if width < lanes and width >= c and self._explicit is None:
                variant, lanes = name, width
        groups = -(-c // lanes)
        if self.threads == 1 or (groups == 1 and y1 - y0 < 2):
            jobs = [(0, c, y0, y1)]
        elif groups >= self.threads:
            # whole groups per thread, so that no vector runs with empty lanes
            bounds = np.minimum(np.linspace(0, groups, self.threads + 1).astype(int) * lanes, c)
            jobs = [(int(a), int(b), y0, y1) for a, b in itertools.pairwise(bounds) if b > a]
        else:
            rows = np.linspace(y0, y1, min(self.threads, y1 - y0) + 1).astype(int)
            jobs = [(0, c, int(a), int(b)) for a, b in itertools.pairwise(rows) if b > a]
        parallel(run, jobs)
        return out
