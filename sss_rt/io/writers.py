"""Output formats, each written atomically (temporary name, then rename into place), with the
mode the umask gives (as ``open()`` would)."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

_umask_lock = threading.Lock()


def file_mode() -> int:
    """The mode a new file gets from ``open()``: 0o666 less the process's umask."""
    with _umask_lock:  # the umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds
    (also on Ctrl-C: the temporary file is removed, nothing half-written is left)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())  # mkstemp's 0600 would survive the rename
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_with(path: Path, writer: Callable[[IO[bytes]], Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())


def embedding_to_uint8(embedding: np.ndarray) -> np.ndarray:
    return np.round(np.clip(embedding, 0.0, 1.0) * 255.0).astype(np.uint8)


def _png_bytes(rgb: np.ndarray) -> bytes:
    import cv2  # imported when a PNG is written (the CLI loads without OpenCV)

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _write_npy(path: Path, image, embedding, features, dtype) -> None:
    _write_with(path, lambda fh: np.save(fh, features.astype(dtype, copy=False)))


def _write_npz(path: Path, image, embedding, features, dtype) -> None:
    arrays = {"embedding": embedding}
    if features is not None:  # the raw features only when asked (--features)
        arrays["features"] = features.astype(dtype, copy=False)
    _write_with(path, lambda fh: np.savez(fh, **arrays))


def _write_png(path: Path, image, embedding, features, dtype) -> None:
    _write_with(path, lambda fh: fh.write(_png_bytes(embedding_to_uint8(embedding))))


def _write_sss(path: Path, image, embedding, features, dtype) -> None:
    side = np.concatenate([image, embedding_to_uint8(embedding)], axis=1)
    _write_with(path, lambda fh: fh.write(_png_bytes(side)))


def _write_mat(path: Path, image, embedding, features, dtype) -> None:
    from scipy.io import savemat

    _write_with(
        path,
        lambda fh: savemat(
            fh, {"embedmap": features.astype(np.float32, copy=False)}, do_compression=True
        ),
    )


@dataclass(frozen=True)
class Format:
    """One output format: its file suffix (appended to the output stem), whether it needs the
    raw features, what it holds, and its writer."""

    suffix: str
    needs_features: bool
    description: str
    writer: Callable[..., None]


#: the one table of output formats (the CLI's choices, the batch's names, the writer)
FORMATS: dict[str, Format] = {
    "npy": Format(".npy", True, "the raw H×W×128 features", _write_npy),
    "npz": Format(
        ".npz", False, "the 3-d embedding (and the raw features with --features)", _write_npz
    ),
    "png": Format(".embedding.png", False, "the 3-d features as an 8-bit RGB image", _write_png),
    "sss": Format(".sss.png", False, "image and 3-d features side by side", _write_sss),
    "mat": Format(".mat", True, "an H×W×128 'embedmap' (MATLAB)", _write_mat),
}


def write_output(
    fmt: str,
    path: Path,
    *,
    image: np.ndarray,
    embedding: np.ndarray,
    features: np.ndarray | None,
    float16: bool = False,
) -> None:
    """Write one output format. ``features`` is H×W×C (needed by the formats that say so)."""
    spec = FORMATS.get(fmt)
    if spec is None:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if spec.needs_features and features is None:
        raise ValueError(f"format {fmt!r} needs the raw features")
    spec.writer(path, image, embedding, features, np.float16 if float16 else np.float32)
