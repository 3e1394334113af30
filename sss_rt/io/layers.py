"""Soft layers on disk: what ``sss-rt segment`` writes and the feature files it reads.

Per input ``x``: ``x.layers.npz`` (``alphas`` H×W×K float32 summing to 1 per pixel,
``embedding`` h×w×3 float32: the photo's size, or twice the working size for a photo over 4× it —
``SegmentConfig.feature_shape``), ``x.layers.png`` (the photo beside its layers, each in its own
colour, blended by alpha) and, when asked, ``x.layer-K.png`` (the photo with layer K as its
alpha channel, RGBA). Every file is written atomically (``writers.atomic_path``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sss_rt.errors import ImageError
from sss_rt.io.writers import _write_with

#: layer colours (RGB), distinct at a glance; layers beyond them cycle
PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180],
        [70, 240, 240], [245, 130, 48], [240, 50, 230], [210, 245, 60], [0, 128, 128],
    ],
    np.float32,
)  # fmt: skip

NPZ_SUFFIX = ".layers.npz"
OVERVIEW_SUFFIX = ".layers.png"
#: suffixes of extracted-feature files ``segment`` reads instead of a photo
FEATURE_SUFFIXES = (".sss.png", ".npz")


def layer_suffix(k: int) -> str:
    return f".layer-{k}.png"


def overview(image: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """The photo beside Σ_k α_k·colour_k (H×2W×3 uint8)."""
    colors = PALETTE[np.arange(alphas.shape[2]) % len(PALETTE)]
    blend = np.clip(alphas @ colors, 0, 255).astype(np.uint8)
    return np.concatenate([image, blend], axis=1)


def _png(array: np.ndarray) -> bytes:
    import cv2  # imported when a PNG is written (the CLI loads without OpenCV)

    conv = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, buf = cv2.imencode(".png", cv2.cvtColor(array, conv))
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def write_npz(path: Path, alphas: np.ndarray, embedding: np.ndarray) -> None:
    _write_with(
        path,
        lambda fh: np.savez(
            fh, alphas=alphas.astype(np.float32), embedding=embedding.astype(np.float32)
        ),
    )


def write_overview(path: Path, image: np.ndarray, alphas: np.ndarray) -> None:
    _write_with(path, lambda fh: fh.write(_png(overview(image, alphas))))


def write_layer(path: Path, image: np.ndarray, alpha: np.ndarray) -> None:
    """The photo with one layer as its alpha channel (RGBA PNG)."""
    a = np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)
    _write_with(path, lambda fh: fh.write(_png(np.dstack([image, a]))))


def own_output_kind(path: Path) -> str | None:
    """What ``path`` is if it is an sss-rt output that is neither a photo nor a feature file
    ``segment`` reads (an embedding image, a soft layer or their overview), else ``None``."""
    from sss_rt.io.writers import FORMATS

    name = path.name.lower()
    if name.endswith(FORMATS["png"].suffix):
        return "an sss-rt embedding image (false colour), not a photo"
    if name.endswith(OVERVIEW_SUFFIX) or re.search(r"\.layer-\d+\.png$", name):
        return "an sss-rt soft-layer image, not a photo"
    return None


def is_feature_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in FEATURE_SUFFIXES)


def feature_stem(path: Path) -> str:
    """``x`` of ``x.sss.png`` / ``x.npz`` (the name the layers are written under)."""
    name = path.name
    for suffix in FEATURE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def find_photo(base: Path) -> Path | None:
    """The image file named ``base`` plus an image extension (the first, sorted), if any."""
    from sss_rt.io.images import is_image_path

    found = sorted(p for p in base.parent.glob(base.name + ".*") if p.stem == base.name)
    return next((p for p in found if is_image_path(p)), None)


def read_features(path: Path, photo: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(photo H×W×3 uint8 RGB, embedding H×W×3 float32 in [0, 1]) from an extracted file:
    ``.sss.png`` holds both side by side; ``.npz`` holds the embedding, and the photo is
    ``photo`` (default: an image beside it with the same stem)."""
    from sss_rt.io.images import load_image

    if path.name.lower().endswith(".sss.png"):
        side = load_image(path)
        _h, w2 = side.shape[:2]
        if w2 % 2:
            raise ImageError(f"{path}: not an .sss.png (its width is odd)")
        return side[:, : w2 // 2].copy(), side[:, w2 // 2 :].astype(np.float32) / 255.0
    try:
        with np.load(path) as z:
            if "embedding" not in z.files:
                raise ImageError(f"{path}: holds no 'embedding' array")
            embedding = np.asarray(z["embedding"], np.float32)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable .npz ({exc})") from None
    if photo is None:
        stem = feature_stem(path)
        photo = find_photo(path.parent / stem)
        if photo is None:
            raise ImageError(
                f"{path} holds the embedding but not the photo: put {stem}.jpg (or .png, …) "
                "beside it, give --photos DIR, or segment the .sss.png"
            )
    image = load_image(photo)
    if image.shape[:2] != embedding.shape[:2] or embedding.ndim != 3:
        raise ImageError(
            f"{path}: embedding {embedding.shape} does not match its photo {photo} {image.shape}"
        )
    return image, embedding
