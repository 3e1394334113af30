"""Reading images as RGB uint8, and finding them in folders."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from sss_rt.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Convert a decoded OpenCV array (BGR/BGRA/gray, 8/16-bit or float) to RGB uint8.

    Alpha is dropped (not composited); 16-bit is scaled by 255/65535 with rounding; floats are
    taken as [0, 1].
    """
    if array.dtype == np.uint16:
        array = np.round(array.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    elif array.dtype in (np.float32, np.float64):
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    channels = array.shape[2]
    if channels == 1:
        return cv2.cvtColor(array[..., 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"unsupported channel count {channels}")


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as H×W×3 RGB uint8, with its EXIF orientation applied."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError):
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    # IMREAD_COLOR applies EXIF orientation, converts gray/palette/CMYK to 3 channels and drops
    # alpha; ANYDEPTH keeps 16-bit samples so they can be scaled rather than truncated.
    array = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if array is None:
        raise ImageError(f"{path}: not a readable image (corrupt, truncated or unknown format)")
    return to_rgb_uint8(array)


@dataclass(frozen=True)
class ImageTask:
    """An input image and where its outputs go, relative to the output folder."""

    source: Path
    relative_stem: Path  # e.g. sub/dir/photo (no extension)


def find_images(
    inputs: Iterable[str | os.PathLike[str]], recursive: bool = True
) -> tuple[list[ImageTask], int]:
    """Expand files and folders into image tasks whose output paths mirror the input tree.

    Returns ``(tasks, skipped)`` where ``skipped`` counts non-image files found in folders.
    Files named explicitly are always kept (and fail later if unreadable). When two inputs would
    map to the same output stem (``a.jpg`` and ``a.png``), both keep their extension in the stem.
    """
    tasks: list[ImageTask] = []
    skipped = 0
    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            walker: Iterator[Path] = root.rglob("*") if recursive else root.glob("*")
            for path in sorted(walker):
                if not path.is_file():
                    continue
                if is_image_path(path):
                    tasks.append(ImageTask(path, path.relative_to(root).with_suffix("")))
                else:
                    skipped += 1
        elif root.exists():
            tasks.append(ImageTask(root, Path(root.stem)))
        else:
            raise ImageError(f"{root}: no such file or folder")
    counts: dict[Path, int] = {}
    for task in tasks:
        counts[task.relative_stem] = counts.get(task.relative_stem, 0) + 1
    return [
        ImageTask(t.source, t.relative_stem.with_name(t.source.name))
        if counts[t.relative_stem] > 1
        else t
        for t in tasks
    ], skipped
