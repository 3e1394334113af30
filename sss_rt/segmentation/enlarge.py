"""Layers segmented at the working size, enlarged to the photo's size in bands of rows.

A 12 MP photo's five layers are 240 MB of float32 at its size; enlarging them whole took K
resized planes, their stack, a clipped copy and the sums at once (~1 GB). Here the output is
allocated once and filled a band of rows at a time: bilinear with half-pixel centres
(:func:`sss_rt.resample.linear_taps`, OpenCV's ``INTER_LINEAR`` rule), clipped to [0, 1] and
renormalized to sum to one per pixel, so that the working memory is a band's, whatever the
photo's size.
"""

from __future__ import annotations

import numpy as np

from sss_rt.resample import linear_taps

#: output rows per band (at 4000 columns and 5 layers: ~20 MB of float32 per temporary)
BAND_ROWS = 256


def enlarge_layers(
    layers: np.ndarray, shape: tuple[int, int], band_rows: int = BAND_ROWS
) -> np.ndarray:
    """Soft layers h×w×K (float, summing to 1) bilinearly enlarged to ``shape`` (H, W).

    Parameters
    ----------
    layers : ndarray
        h×w×K layers at the working size.
    shape : tuple of int
        The photo's (H, W); either side may also be smaller than the layers'.
    band_rows : int
        Output rows computed at once.

    Returns
    -------
    ndarray
        H×W×K float32 in [0, 1], each pixel summing to 1 (0 where every layer is 0).
    """
    h, w, k = layers.shape
    out_h, out_w = shape
    src = np.asarray(layers, np.float32)
    y0, y1, wy = linear_taps(out_h, h)
    x0, x1, wx = linear_taps(out_w, w)
    wx = wx[None, :, None]
    out = np.empty((out_h, out_w, k), np.float32)
    for r0 in range(0, out_h, band_rows):
        r1 = min(out_h, r0 + band_rows)
        fy = wy[r0:r1, None, None]
        rows = src[y0[r0:r1]] * (1.0 - fy) + src[y1[r0:r1]] * fy  # band × w × K
        band = out[r0:r1]
        np.multiply(rows[:, x0], 1.0 - wx, out=band)
        band += rows[:, x1] * wx
        np.clip(band, 0.0, 1.0, out=band)
        band /= np.maximum(band.sum(axis=2, keepdims=True), np.float32(1e-10))
    return out
