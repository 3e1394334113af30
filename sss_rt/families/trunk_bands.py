"""The trunk of a family that allows tiling, run in bands of rows with overlapping halos.

A convolutional trunk with folded batch norm computes each output from a bounded window of the
image (its receptive field), so a band of rows with a halo at least that window's radius on
each side gives the whole image's outputs for the band's own rows, up to float rounding; band
edges on multiples of the trunk's total stride keep every output grid aligned. The outputs are
written into whole-image arrays as the bands finish, so only one band's activations exist at a
time. At 24 MP the hypercolumn trunk was the process's peak in every post-processing mode:
4386 MB whole, 3617 MB in 4 bands (with ONNX Runtime's memory patterns off, which the bands
need: with them on, 4 bands still peaked at 4217 MB).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

#: rows of halo above and below a band: the hypercolumn trunk's deepest output (res5 at 1/32,
#: resized to 1/8 and its 3×3 tap conv) reads ~280 image rows either side; a multiple of STRIDE
HALO = 320
#: the trunk's total stride: band edges on its multiples keep every output's grid aligned
STRIDE = 32
#: images above BANDED_ABOVE pixels run the trunk in bands of about this many pixels (each band
#: recomputes its halos: at 24 MP, 4 bands process 48% more rows than the image has)
BAND_PIXELS = 6_000_000
#: below this many pixels the trunk runs whole (faster; its peak is far from the 4 GB bound)
BANDED_ABOVE = 16_000_000


def runs_banded(height: int, width: int, tiling: bool) -> bool:
    """Whether a backend runs the trunk of an image this size in bands: above
    :data:`BANDED_ABOVE` pixels, for a family that allows tiling."""
    return tiling and height * width > BANDED_ABOVE


def band_edges(height: int, width: int, band_pixels: int = BAND_PIXELS) -> list[int]:
    """Row edges [0, …, height] of the bands: as few as keep each band (without its halo)
    within ``band_pixels``, inner edges on multiples of :data:`STRIDE`."""
    bands = max(1, -(-height * width // band_pixels))
    rows = -(-height // bands)
    rows = -(-rows // STRIDE) * STRIDE
    return [*range(0, height, rows), height]


def run_in_bands(
    run: Callable[[np.ndarray], list[np.ndarray]],
    image: np.ndarray,
    band_pixels: int = BAND_PIXELS,
    halo: int = HALO,
) -> list[np.ndarray]:
    """``run`` (an H×W×3 image → its trunk outputs, each C×⌈H/s⌉×⌈W/s⌉ for its stride s) on
    bands of ``image``'s rows with ``halo`` rows either side; the outputs of the whole image."""
    h = image.shape[0]
    edges = band_edges(h, image.shape[1], band_pixels)
    if len(edges) == 2:
        return run(image)
    windows = _windows(edges, halo)
    if windows is None:  # every band with its halos is the whole image: run it once
        return run(image)
    outs: list[np.ndarray] = []
    strides: list[int] = []
    for a, b, y0, y1 in windows:
        parts = run(np.ascontiguousarray(image[a:b]))
        if not outs:
            for part in parts:
                s = round((b - a) / part.shape[1])  # a band's rows are a multiple of s
                strides.append(s)
                outs.append(np.empty((part.shape[0], -(-h // s), part.shape[2]), part.dtype))
        for out, part, s in zip(outs, parts, strides, strict=True):
            first, last = y0 // s, -(-y1 // s)
            out[:, first:last] = part[:, first - a // s : last - a // s]
        del parts
    return outs


def _windows(edges: list[int], halo: int) -> list[tuple[int, int, int, int]] | None:
    """(a, b, y0, y1): the rows [a, b) each band [y0, y1) runs on — its halos, grown so that
    every band has the same height (one input shape: an engine that keeps what it allocated
    per shape, as OpenVINO does, holds one set; measured at 24 MP: 5966 MB with the first and
    last bands shorter). A band's own rows keep at least ``halo`` rows either side inside the
    image; every a is a multiple of STRIDE (the last band's too: the height is ≡ h mod STRIDE).
    None when that height is the whole image's (each band would run all of it)."""
    h = edges[-1]
    natural = [(max(0, y0 - halo), min(h, y1 + halo)) for y0, y1 in itertools.pairwise(edges)]
    tallest = max(b - a for a, b in natural)
    height = tallest + (h - tallest) % STRIDE  # ≥ tallest, ≡ h (mod STRIDE)
    if height >= h:
        return None
    out = []
    for (a, _), (y0, y1) in zip(natural, itertools.pairwise(edges), strict=True):
        a = min(a, h - height)
        out.append((a, a + height, y0, y1))
    return out
