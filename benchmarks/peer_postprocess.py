"""Peer post-processing: OpenCV-contrib's guided filter per channel + a straightforward NumPy PCA.

Runs in its own environment (opencv-contrib conflicts with the project's opencv):
    python benchmarks/peer_postprocess.py HEIGHT WIDTH CHANNELS RUNS RADIUS EPS
prints one JSON line with the median and p90 time and the peak RSS. The inputs (image and random
features) are generated exactly as ``sss_rt.bench.postprocess_only`` generates them.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import cv2
import numpy as np


def test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 64, 2), max(width // 64, 2), 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-12, 13, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def peer(feats: np.ndarray, image: np.ndarray, radius: int, eps: float) -> np.ndarray:
    guide = image.astype(np.float32) / 255.0
    gf = cv2.ximgproc.createGuidedFilter(guide, radius, eps)
    filtered = np.stack([gf.filter(ch) for ch in feats], axis=-1)
    x = filtered.reshape(-1, feats.shape[0]).astype(np.float64)
    x -= x.mean(0)
    cov = x.T @ x / (x.shape[0] - 1)
    _, vecs = np.linalg.eigh(cov)
    comps = vecs[:, ::-1][:, :3].T
    for row in comps:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    y = x @ comps.T
    y = (y - y.min(0)) / (y.max(0) - y.min(0))
    return y.reshape(*image.shape[:2], 3).astype(np.float32)


def main() -> None:
    h, w, c, runs = (int(v) for v in sys.argv[1:5])
    radius, eps = int(sys.argv[5]), float(sys.argv[6])
    rng = np.random.default_rng(0)
    image = test_image(h, w)
    feats = rng.normal(size=(c, h, w)).astype(np.float32)
    peer(feats, image, radius, eps)  # warm-up
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        peer(feats, image, radius, eps)
        samples.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "median_s": float(np.median(samples)),
                "p90_s": float(np.percentile(samples, 90)),
                "runs": runs,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                "opencv": cv2.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
