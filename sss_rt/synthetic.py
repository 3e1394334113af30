"""Synthetic scenes with known instance masks, composed from real photographs.

The photographs are scikit-image's bundled sample images (public domain or permissively
licensed; installed with scikit-image, no download). Each scene is a photographic background
with 2–6 pasted objects (ellipses, star polygons and smooth blobs) textured with crops of other
photographs, at varied scales; later objects occlude earlier ones.
"""

from __future__ import annotations

import functools
from importlib import resources

import cv2
import numpy as np

#: bundled colour photographs and grey textures of scikit-image
COLOR_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)
GRAY_PHOTOS = ("brick.png", "grass.png", "gravel.png", "camera.png", "moon.png", "coins.png")

MIN_VISIBLE_PIXELS = 40
#: the held-out scenes (``sss-rt eval``, the benchmarks) use a seed far from any training seed
HELD_OUT_SEED = 1_000_003


@functools.cache
def photo_bank() -> tuple[np.ndarray, ...]:
    """The source photographs as RGB uint8 arrays (grey ones replicated to 3 channels)."""
    try:
        root = resources.files("skimage") / "data"
    except ModuleNotFoundError:
        raise ImportError(
            "synthetic scenes need scikit-image: pip install 'sss-rt[train]'"
        ) from None
    photos = []
    for name in COLOR_PHOTOS + GRAY_PHOTOS:
        data = np.frombuffer((root / name).read_bytes(), np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot decode scikit-image sample {name}")
        photos.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return tuple(photos)


def _random_crop(photo: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A crop of random scale and position, resized to h×w, with a random colour jitter."""
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.3, 1.0)
    ch = max(8, int(ph * scale))
    cw = max(8, min(pw, int(ch * w / h)))
    ch = min(ch, ph)
    y = rng.integers(0, ph - ch + 1)
    x = rng.integers(0, pw - cw + 1)
    crop = cv2.resize(photo[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    gain = rng.uniform(0.7, 1.3, size=3)
    if rng.random() < 0.5:  # tint grey-ish textures so that colour also varies
        gain = gain * rng.uniform(0.5, 1.5, size=3)
    return np.clip(crop.astype(np.float32) * gain + rng.uniform(-20, 20), 0, 255).astype(np.uint8)


def _shape_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    size = rng.uniform(0.15, 0.6) * min(h, w)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    mask = np.zeros((h, w), np.uint8)
    kind = rng.integers(0, 3)
    if kind == 0:
        axes = (int(size / 2), int(size / 2 * rng.uniform(0.4, 1.0)))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind == 1:
        n = rng.integers(5, 12)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = size / 2 * rng.uniform(0.4, 1.0, n)
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    else:
        noise = rng.normal(size=(max(h // 8, 2), max(w // 8, 2))).astype(np.float32)
        noise = cv2.GaussianBlur(cv2.resize(noise, (w, h)), (0, 0), size / 6)
        yy, xx = np.mgrid[0:h, 0:w]
        bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 2.5) ** 2))
        field = bump + 0.5 * noise / (np.abs(noise).max() + 1e-6)
        mask = (field > 0.5).astype(np.uint8)
    return mask.astype(bool)


class SyntheticScenes:
    """Deterministic synthetic scenes: ``scenes[i]`` is the same for the same (seed, i).

    Returns ``(image H×W×3 uint8 RGB, instances H×W int32)``; the background is instance 1 and
    pasted objects are 2, 3, …; remnants left under MIN_VISIBLE_PIXELS by occlusion become 0
    (unlabelled).
    """

    def __init__(
        self, size: tuple[int, int] = (192, 192), seed: int = 0, objects: tuple[int, int] = (2, 6)
    ):
        self.size = size
        self.seed = seed
        self.objects = objects

    def __len__(self) -> int:
        return 1 << 30

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, index))
        bank = photo_bank()
        h, w = self.size
        order = rng.permutation(len(bank))
        image = _random_crop(bank[order[0]], h, w, rng)
        instances = np.ones((h, w), np.int32)
        n_obj = rng.integers(self.objects[0], self.objects[1] + 1)
        for k in range(n_obj):
            mask = _shape_mask(h, w, rng)
            texture = _random_crop(bank[order[(k + 1) % len(bank)]], h, w, rng)
            image[mask] = texture[mask]
            instances[mask] = k + 2
        # instances that occlusion left too small become unlabelled
        ids, counts = np.unique(instances, return_counts=True)
        for inst, count in zip(ids, counts, strict=True):
            if count < MIN_VISIBLE_PIXELS:
                instances[instances == inst] = 0
        return image, instances
