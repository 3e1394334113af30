"""The backend interface: an H×W×3 uint8 RGB image in, a source of feature bands out."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from sss_rt.bands import FeatureSource
from sss_rt.model_info import ModelInfo

#: how a backend runs the network: ``split`` (the low-resolution trunk once, the
#: full-resolution head per band on demand, in bounded memory) or ``whole`` (the whole graph at
#: once, its features held in memory; used for parity checks)
EXECUTIONS = ("split", "whole")


class Backend(abc.ABC):
    """Runs the feature network. The pipeline around it is the same for every backend."""

    #: registry name ("onnxruntime", "torch", "tensorrt")
    name: str = ""
    _info: ModelInfo
    _device: str

    @property
    def info(self) -> ModelInfo:
        """The model's self-description."""
        return self._info

    @property
    def device(self) -> str:
        """Where the network runs, e.g. ``"cpu"`` or ``"cuda:0"``."""
        return self._device

    @property
    def splits(self) -> bool:
        """Whether ``features`` yields bands computed on demand (bounded memory) rather than
        the whole graph's output."""
        return False

    @abc.abstractmethod
    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        """The features of one H×W×3 uint8 RGB image, the backend's own way (``whole``: run
        the whole graph at once even where the backend splits it)."""

    def run(self, images: np.ndarray) -> np.ndarray:
        """Features (N, C, H, W) float32 for images (N, H, W, 3) uint8 RGB: every band of
        ``features`` at once."""
        images = check_images(images)
        return np.stack([self.features(im).rows(0, im.shape[0]) for im in images])

    def describe(self) -> dict[str, Any]:
        """A short description for logs and benchmarks."""
        return {
            "backend": self.name,
            "device": self.device,
            "backbone": self.info.backbone,
            "execution": "split" if self.splits else "whole",
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's resources (sessions, device memory)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_images(images: np.ndarray) -> np.ndarray:
    """Validate a batch of uint8 RGB images (N, H, W, 3) and return it C-contiguous."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images of shape (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}")
    return np.ascontiguousarray(images)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate one H×W×3 uint8 RGB image and return it C-contiguous."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an H×W×3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("image is empty")
    return np.ascontiguousarray(image)


def release_freed_memory() -> None:
    """glibc's ``malloc_trim``: heap memory freed after a large run (a trunk's activations, a
    head band's temporaries) goes back to the system instead of staying in the process, where
    it would add to the next stage's peak (a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
