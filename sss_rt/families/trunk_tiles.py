"""The trunk of a family that allows tiling, run in square tiles with overlapping halos.

A convolutional trunk with folded batch norm computes each output from a bounded window of the
image (its receptive field), so a tile with a halo at least that window's radius on each side
gives the whole image's outputs for the tile's own region, up to float rounding; tile edges on
multiples of the trunk's total stride keep every output grid aligned. The outputs are written
into whole-image arrays as the tiles finish, so only one tile's activations exist at a time.
At 24 MP the hypercolumn trunk was the process's peak in every post-processing mode: whole,
4386 MB on ONNX Runtime, 9761 MB on OpenVINO. Square tiles need less halo per pixel kept than
full-width bands of rows of the same area: in bands of 2 MP (5.8 MP with halos) OpenVINO's
peak was 4061 MB, in tiles of 2 MP (3.7 MP with halos, 22% fewer pixels computed) 3398 MB.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

#: pixels of halo on each side of a tile: the hypercolumn trunk's deepest output (res5 at 1/32,
#: resized to 1/8 and its 3×3 tap conv) reads ~280 image pixels either way; a multiple of STRIDE
HALO = 320
#: the trunk's total stride: tile edges on its multiples keep every output's grid aligned
STRIDE = 32
#: images above TILED_ABOVE pixels run the trunk in tiles of about this many pixels (each tile
#: recomputes its halos: at 24 MP, 6 tiles of 6.2 MP with halos, 56% more pixels than the image)
TILE_PIXELS = 6_000_000
#: below this many pixels the trunk runs whole (faster; its peak is far from the 4 GB bound)
TILED_ABOVE = 16_000_000


def runs_tiled(height: int, width: int, tiling: bool) -> bool:
    """Whether a backend runs the trunk of an image this size in tiles: above
    :data:`TILED_ABOVE` pixels, for a family that allows tiling."""
    return tiling and height * width > TILED_ABOVE


def tile_edges(height: int, width: int, tile_pixels: int) -> tuple[list[int], list[int]]:
    """Row and column edges of tiles about ``tile_pixels`` each (without halos), as square as
    the image allows, inner edges on multiples of :data:`STRIDE`."""
    side = max(STRIDE, int(tile_pixels**0.5))
    return _edges(height, -(-height // side)), _edges(width, -(-width // side))


def _edges(length: int, parts: int) -> list[int]:
    size = -(-length // max(1, parts))
    size = -(-size // STRIDE) * STRIDE
    return [*range(0, length, size), length]


def keep_region(
    out: np.ndarray, shape: tuple[int, int], keep: tuple[int, int, int, int]
) -> np.ndarray:
    """The part of ``out`` (C×⌈h/s⌉×⌈w/s⌉, a trunk output of an input tile of ``shape``
    (h, w), at its stride s) that covers the tile's input rows [keep[0], keep[1]) and columns
    [keep[2], keep[3]): a view (``out`` itself when that is the whole tile, whatever the
    output's geometry: a family that does not tile may have any)."""
    if keep == (0, shape[0], 0, shape[1]):
        return out
    s = stride_of(shape, out.shape[1:])
    r0, r1, c0, c1 = keep
    return out[:, r0 // s : -(-r1 // s), c0 // s : -(-c1 // s)]


def stride_of(shape: tuple[int, int], out: tuple[int, ...]) -> int:
    """The stride s (a power of two up to :data:`STRIDE`) of an output of ``out`` = (⌈h/s⌉,
    ⌈w/s⌉) rows and columns for an input of ``shape`` (h, w)."""
    for s in (1 << i for i in range(STRIDE.bit_length())):
        if (-(-shape[0] // s), -(-shape[1] // s)) == tuple(out[:2]):
            return s
    raise ValueError(f"an output of {tuple(out[:2])} is no stride of an input of {shape}")


def run_in_tiles(
    run: Callable[[np.ndarray, tuple[int, int, int, int]], list[np.ndarray]],
    image: np.ndarray,
    tile_pixels: int = TILE_PIXELS,
    halo: int = HALO,
) -> list[np.ndarray]:
    """``run`` (an h×w×3 image and the part of it to keep, rows [r0, r1) and columns
    [c0, c1) → its trunk outputs for that part, each C×⌈…/s⌉×⌈…/s⌉ at its stride s, as
    :func:`keep_region` cuts them: a tile's halos never need copying out of the engine) on
    square tiles of ``image`` of about ``tile_pixels`` each, with ``halo`` pixels on every side
    that has a neighbour; the outputs of the whole image. Every tile has one shape (the last
    row and column of tiles reach further back)."""
    h, w = image.shape[:2]
    row_edges, col_edges = tile_edges(h, w, tile_pixels)
    rows = _windows(row_edges, halo) if len(row_edges) > 2 else None
    cols = _windows(col_edges, halo) if len(col_edges) > 2 else None
    if rows is None and cols is None:  # every tile with its halos is the whole image: once
        return run(image, (0, h, 0, w))
    outs: list[np.ndarray] = []
    strides: list[int] = []
    for a, b, y0, y1 in rows or [(0, h, 0, h)]:
        for c, d, x0, x1 in cols or [(0, w, 0, w)]:
            tile = np.ascontiguousarray(image[a:b, c:d])
            parts = run(tile, (y0 - a, y1 - a, x0 - c, x1 - c))
            if not outs:
                for part in parts:
                    s = stride_of((y1 - y0, x1 - x0), part.shape[1:])
                    strides.append(s)
                    shape = (part.shape[0], -(-h // s), -(-w // s))
                    outs.append(np.empty(shape, part.dtype))
            for out, part, s in zip(outs, parts, strides, strict=True):
                out[:, y0 // s : y0 // s + part.shape[1], x0 // s : x0 // s + part.shape[2]] = part
            del parts
    return outs


def _windows(edges: list[int], halo: int) -> list[tuple[int, int, int, int]] | None:
    """Along one axis of length h = edges[-1]: (a, b, y0, y1), the span [a, b) each tile's own
    span [y0, y1) runs on — its halos, grown so that every tile has the same extent (one input
    shape: an engine that keeps what it allocated per shape, as OpenVINO does, holds one set;
    measured at 24 MP in bands of rows: 5966 MB with the first and last bands shorter). Own
    spans keep at least ``halo`` either side inside the image; every a is a multiple of STRIDE
    (the last one's too: the extent is ≡ h mod STRIDE). None when that extent is h (each tile
    would span the whole axis)."""
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
