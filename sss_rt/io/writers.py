"""Output formats, each written atomically (temporary name, then rename into place)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

#: format name → file suffix appended to the output stem
FORMAT_SUFFIXES: dict[str, str] = {
    "npy": ".npy",
    "npz": ".npz",
    "png": ".embedding.png",
    "sss": ".sss.png",
    "mat": ".mat",
}
FORMATS = tuple(FORMAT_SUFFIXES)


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
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
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def write_output(
    fmt: str,
    path: Path,
    *,
    image: np.ndarray,
    embedding: np.ndarray,
    features: np.ndarray | None,
    float16: bool = False,
) -> None:
    """Write one output format. ``features`` is H×W×C (needed by npy, npz and mat)."""
    dtype = np.float16 if float16 else np.float32
    if fmt in ("npy", "npz", "mat") and features is None:
        raise ValueError(f"format {fmt!r} needs the raw features")
    if fmt == "npy":
        _write_with(path, lambda fh: np.save(fh, features.astype(dtype, copy=False)))
    elif fmt == "npz":
        _write_with(
            path,
            lambda fh: np.savez(
                fh, features=features.astype(dtype, copy=False), embedding=embedding
            ),
        )
    elif fmt == "png":
        _write_with(path, lambda fh: fh.write(_png_bytes(embedding_to_uint8(embedding))))
    elif fmt == "sss":
        side = np.concatenate([image, embedding_to_uint8(embedding)], axis=1)
        _write_with(path, lambda fh: fh.write(_png_bytes(side)))
    elif fmt == "mat":
        from scipy.io import savemat

        _write_with(
            path,
            lambda fh: savemat(
                fh, {"embedmap": features.astype(np.float32, copy=False)}, do_compression=True
            ),
        )
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
