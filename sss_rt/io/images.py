"""Reading images as RGB uint8, and finding them in folders."""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
    import cv2  # imported when images are decoded (the CLI and the GPU path load without it)

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


#: what an image file may hold beyond ``max_megapixels`` and still be decoded (to be downscaled):
#: a header above this many times the limit is refused before any decode allocates
DECODE_FACTOR = 4.0
#: no image above this is decoded, whatever the limits (OpenCV's own ceiling, 2³⁰ pixels)
MAX_DECODE_PIXELS = 1 << 30


_PILLOW_LIMIT_LOCK = threading.Lock()


def image_size(data: bytes, name: str = "image") -> tuple[int, int, str]:
    """(width, height, format) from an image's header, without decoding its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
            # Pillow's notes on damaged metadata are not ours to print, and the caller applies
            # its own limit to the header's size
            warnings.simplefilter("ignore")
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(data)) as im:
                    return int(im.size[0]), int(im.size[1]), str(im.format or "")
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: not a readable image ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    """The cause in words: the library's first line, without Python object representations."""
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not an image, or a format neither Pillow nor OpenCV reads"
    lines = str(exc).strip().splitlines()
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", lines[0]) if lines else ""
    return text or type(exc).__name__


def _check_complete(data: bytes, fmt: str, name: str) -> None:
    """Refuse a truncated file (OpenCV would decode what is there and fill the rest)."""
    from PIL import Image

    if fmt == "JPEG":
        if b"\xff\xd9" not in data[-4096:]:  # no end-of-image marker
            raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
        return
    try:
        with warnings.catch_warnings(), Image.open(io.BytesIO(data)) as im:
            warnings.simplefilter("ignore")
            if fmt == "PNG":
                im.verify()  # every chunk's CRC, up to IEND
            else:
                im.load()
    except Exception as exc:  # Pillow raises many types for damaged data
        raise ImageError(f"{name}: truncated or damaged {fmt or 'image'} ({_why(exc)})") from None


def load_image(
    path: str | os.PathLike[str],
    max_megapixels: float | None = None,
    large: str = "downscale",
) -> np.ndarray:
    """Read an image file as H×W×3 RGB uint8, with its EXIF orientation applied.

    The pixel count is read from the header before anything is decoded: above
    ``max_megapixels`` the file is refused with ``large="refuse"``, and with ``"downscale"``
    when it exceeds ``DECODE_FACTOR`` × the limit (what may be decoded to be shrunk). Every way
    a file can fail (missing, unreadable, a folder, empty, not an image, truncated, damaged,
    too large) raises ``ImageError`` with one line naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, not an image") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or _why(exc)})") from None
    return decode_image(data, str(path), max_megapixels, large)


def decode_image(
    data: bytes, name: str = "image", max_megapixels: float | None = None, large: str = "downscale"
) -> np.ndarray:
    """An image file's bytes → H×W×3 RGB uint8 (see ``load_image``; ``name`` for messages)."""
    path = name
    if not data:
        raise ImageError(f"{path}: empty file")
    width, height, fmt = image_size(data, str(path))
    mp = width * height / 1e6
    if max_megapixels is not None and mp > max_megapixels:
        size = f"{path}: image is {width}×{height} ({mp:.1f} MP)"
        if large == "refuse":
            raise ImageError(
                f"{size}, above the {max_megapixels:g} MP limit (raise it with "
                "--max-megapixels, or --large downscale)"
            )
        if mp > DECODE_FACTOR * max_megapixels:
            raise ImageError(
                f"{size}, above the {DECODE_FACTOR * max_megapixels:g} MP that "
                f"--max-megapixels {max_megapixels:g} allows to decode and downscale"
            )
    if width * height > MAX_DECODE_PIXELS:
        raise ImageError(
            f"{path}: image is {width}×{height} ({mp:.1f} MP), above the "
            f"{MAX_DECODE_PIXELS / 1e6:.0f} MP any image is decoded at"
        )
    _check_complete(data, fmt, str(path))
    # IMREAD_COLOR applies EXIF orientation, converts gray/palette/CMYK to 3 channels and drops
    # alpha; ANYDEPTH keeps 16-bit samples so they can be scaled rather than truncated.
    import cv2

    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error as exc:
        raise ImageError(f"{path}: not decodable ({_why(exc)})") from None
    if array is None or array.size == 0:
        raise ImageError(f"{path}: not a readable image (corrupt, truncated or unknown format)")
    return to_rgb_uint8(array)


@dataclass(frozen=True)
class ImageTask:
    """An input image and where its outputs go, relative to the output folder."""

    source: Path
    relative_stem: Path  # e.g. sub/dir/photo (no extension)


def find_images(
    inputs: Iterable[str | os.PathLike[str]],
    recursive: bool = True,
    exclude: str | os.PathLike[str] | None = None,
    accept: Callable[[Path], bool] | None = None,
) -> tuple[list[ImageTask], int]:
    """Expand files and folders into image tasks whose output paths mirror the input tree.

    Returns ``(tasks, skipped)`` where ``skipped`` counts non-image files found in folders.
    Files named explicitly are always kept (and fail later if unreadable or missing; only when
    no input exists at all is that an ``ImageError`` here). Symbolic links are
    followed; a file reached twice (named twice, or through links) is kept once, a folder
    reached again through a link is not walked again (so link loops end), and nothing a folder
    walk finds inside ``exclude`` (the output folder), however reached, is an input (a file
    named explicitly is, wherever it is). When two inputs would map to
    the same output stem (``a.jpg`` and ``a.png``), both keep their extension in the stem.
    ``accept``: which files in folders are inputs (default: image files).
    """
    accept = accept or is_image_path
    tasks: list[ImageTask] = []
    skipped = 0
    seen: set[str] = set()
    walked: set[str] = set()
    missing: list[Path] = []
    banned = os.path.realpath(exclude) if exclude is not None else None

    def excluded(real: str) -> bool:
        return banned is not None and (real == banned or real.startswith(banned + os.sep))

    def add(path: Path, stem: Path, named: bool = False) -> None:
        real = os.path.realpath(path)
        if real not in seen and (named or not excluded(real)):
            seen.add(real)
            tasks.append(ImageTask(path, stem))

    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            for path in _walk(root, recursive, walked, excluded):
                if accept(path):
                    add(path, path.relative_to(root).with_suffix(""))
                else:
                    skipped += 1
        elif root.exists() or root.is_symlink():
            add(root, Path(root.stem), named=True)
        else:
            missing.append(root)
    if missing and len(missing) == len(inputs):  # nothing to work on at all
        raise ImageError(f"{missing[0]}: no such file or folder")
    for root in missing:  # like any file that fails: its own `failed:` line, the rest goes on
        add(root, Path(root.stem))
    counts: dict[Path, int] = {}
    for task in tasks:
        counts[task.relative_stem] = counts.get(task.relative_stem, 0) + 1
    return [
        ImageTask(t.source, t.relative_stem.with_name(t.source.name))
        if counts[t.relative_stem] > 1
        else t
        for t in tasks
    ], skipped


def _walk(root: Path, recursive: bool, walked: set[str], excluded) -> Iterator[Path]:
    """Files under ``root`` in sorted order, following links, each folder once."""
    real = os.path.realpath(root)
    if real in walked or excluded(real):
        return
    walked.add(real)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows links
        except OSError:
            continue
        if is_dir:
            if recursive:
                yield from _walk(path, recursive, walked, excluded)
        elif entry.is_file() or entry.is_symlink():
            yield path
