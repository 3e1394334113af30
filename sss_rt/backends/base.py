"""The backend interface: uint8 NHWC RGB images in, float32 N×C×H×W features out."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from sss_rt.model_info import ModelInfo


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

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> np.ndarray:
        """Features (N, C, H, W) float32 for images (N, H, W, 3) uint8 RGB."""

    def describe(self) -> dict[str, Any]:
        """A short description for logs and benchmarks."""
        return {"backend": self.name, "device": self.device, "backbone": self.info.backbone}

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
