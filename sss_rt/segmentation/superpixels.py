"""SLIC-zero superpixels and what the affinities need of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Superpixels:
    labels: np.ndarray  # H×W int32, 0 .. n-1
    centroid_pixel: np.ndarray  # (n,) flat index of the pixel nearest each centroid
    centroid_yx: np.ndarray  # (n, 2) rounded centroids, y / H and x / W
    mean_color: np.ndarray  # (n, 3) in [0, 1]
    mean_feature: np.ndarray  # (n, d)
    adjacent: np.ndarray  # (m, 2) label pairs i < j touching in the 8-neighbourhood

    @property
    def count(self) -> int:
        return len(self.centroid_pixel)


def slic_zero(image: np.ndarray, segments: int) -> np.ndarray:
    """SLIC-zero labels (scikit-image) of an H×W×3 image in [0, 1], relabelled 0 .. n-1."""
    from skimage.segmentation import slic

    labels = slic(image, n_segments=segments, slic_zero=True, start_label=0, channel_axis=-1)
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape).astype(np.int32)


def adjacency(labels: np.ndarray) -> np.ndarray:
    """Pairs (i < j) of labels that touch horizontally, vertically or diagonally."""
    pairs = []
    for a, b in (
        (labels[:, :-1], labels[:, 1:]),
        (labels[:-1, :], labels[1:, :]),
        (labels[:-1, :-1], labels[1:, 1:]),
        (labels[:-1, 1:], labels[1:, :-1]),
    ):
        diff = a != b
        pairs.append(np.stack([a[diff], b[diff]], axis=1))
    p = np.concatenate(pairs)
    p = np.sort(p, axis=1)
    return np.unique(p, axis=0) if len(p) else p.reshape(0, 2)


def describe(labels: np.ndarray, image: np.ndarray, features: np.ndarray) -> Superpixels:
    """Centroids, mean colours and mean features of each label."""
    h, w = labels.shape
    n = int(labels.max()) + 1
    flat = labels.ravel()
    count = np.bincount(flat, minlength=n).astype(np.float64)
    ys, xs = np.divmod(np.arange(h * w), w)
    # centroids rounded half up, as the authors' MATLAB round() of 1-based centroids does
    # (round(c + 1) − 1 = ⌊c + ½⌋), and used rounded both as the affinities' pixels and in the
    # colour affinity's distance test
    cy = np.floor(np.bincount(flat, ys, n) / count + 0.5)
    cx = np.floor(np.bincount(flat, xs, n) / count + 0.5)
    pixel = np.clip(cy, 0, h - 1).astype(np.int64) * w + np.clip(cx, 0, w - 1).astype(np.int64)

    def means(values: np.ndarray) -> np.ndarray:
        v = values.reshape(h * w, -1).astype(np.float64)
        return (
            np.stack([np.bincount(flat, v[:, i], n) for i in range(v.shape[1])], 1) / count[:, None]
        )

    return Superpixels(
        labels=labels,
        centroid_pixel=pixel,
        centroid_yx=np.stack([cy / h, cx / w], axis=1),
        mean_color=means(image),
        mean_feature=means(features),
        adjacent=adjacency(labels),
    )
