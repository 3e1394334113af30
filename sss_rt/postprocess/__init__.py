"""Post-processing: feature bands + the image → the 3-d semantic feature descriptors.

One entry point for every mode and every source: :func:`run` reads a
:class:`~sss_rt.bands.FeatureSource` (the network's bands, computed on demand, or an array in
memory) with the mode's module — ``exact``, ``fast`` or ``matlab``, each a ``run(source, image,
config, keep_features, timings)`` — in bounded memory. :func:`postprocess` is the same on a
C×H×W array.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sss_rt.bands import FeatureSource, as_source
from sss_rt.device import Device
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.pca import PCABasis

log = logging.getLogger("sss_rt")

#: mode name (``config.MODES``) → the module implementing it (``run``), imported when first used
MODE_MODULES: dict[str, str] = {
    "exact": "sss_rt.postprocess.exact",
    "fast": "sss_rt.postprocess.fast",
    "matlab": "sss_rt.postprocess.matlab",
}


def mode_runner(mode: str) -> Callable[..., tuple[np.ndarray, PCABasis, FeatureSource]]:
    """The ``run`` of ``mode``'s module."""
    return importlib.import_module(MODE_MODULES[mode]).run  # type: ignore[no-any-return]


@dataclass
class PostprocessResult:
    embedding: np.ndarray  #: H×W×k float32 in [0, 1]
    basis: PCABasis
    features: np.ndarray | None = None  #: C×H×W float32, when asked


def run(
    features: FeatureSource | np.ndarray,
    image: np.ndarray,
    config: PostprocessConfig | None = None,
    *,
    keep_features: bool = False,
    timings: dict[str, float] | None = None,
) -> PostprocessResult:
    """Post-process one image's features (a source or a C×H×W array) with ``image`` (H×W×3
    uint8 RGB) as guide. ``keep_features``: also return all features, C×H×W. ``timings``
    receives seconds per stage (network: computing bands; guided_filter, pca, normalize).

    Non-finite features raise ``ValueError`` (the float64 sums, which every value reaches,
    catch them; MATLAB mode, whose clamp would hide them, checks each band it reads).
    """
    config = config or PostprocessConfig()
    source = as_source(features)
    if image.shape[:2] != (source.height, source.width):
        raise ValueError(
            f"image is {image.shape[:2]} but features are {(source.height, source.width)}"
        )
    if config.mode == "matlab":
        source = _FiniteCheck(source)
    # NaN/Inf inputs surface as non-finite PCA sums (a ValueError), not as NumPy warnings
    with np.errstate(invalid="ignore", over="ignore"):
        runner = mode_runner(config.mode)
        embedding, basis, read = runner(source, image, config, keep_features, timings)
    kept = None
    if keep_features:
        read = read.materialize() if not read.in_memory else read
        kept = read.rows(0, read.height)
    return PostprocessResult(embedding, basis, kept)


class Postprocessor:
    """The post-processing for features produced on ``device``, chosen once: the CUDA exact
    mode (:mod:`sss_rt.postprocess.cuda`) for a CUDA device in exact mode where a CUDA runtime
    (pycuda or CuPy) works, else the CPU modes of :func:`run` (with one warning when a GPU was
    asked for and cannot be used). ``runtime``: the :mod:`sss_rt.cuda` runtime for the CUDA path
    (default: :func:`~sss_rt.cuda.cuda_runtime` of the device)."""

    def __init__(
        self, config: PostprocessConfig, device: str | Device = "cpu", runtime: Any = None
    ):
        self.config = config
        self.gpu: Any = None
        self.reason = ""
        if Device.parse(device).is_cuda:
            if config.mode != "exact":
                self.reason = f"the {config.mode} mode has no GPU implementation"
            else:
                from sss_rt.errors import BackendUnavailableError
                from sss_rt.postprocess.cuda import CudaPostprocessor

                try:
                    self.gpu = CudaPostprocessor(config, device=device, runtime=runtime)
                except BackendUnavailableError as exc:
                    self.reason = str(exc)
            if self.gpu is None:
                log.warning("post-processing on the CPU: %s", self.reason)

    @property
    def device(self) -> str:
        return "cuda" if self.gpu is not None else "cpu"

    def __call__(
        self,
        features: FeatureSource | np.ndarray,
        image: np.ndarray,
        *,
        keep_features: bool = False,
        timings: dict[str, float] | None = None,
    ) -> PostprocessResult:
        if self.gpu is None:
            return run(features, image, self.config, keep_features=keep_features, timings=timings)
        embedding, basis, kept = self.gpu.run(
            features, image, keep_features=keep_features, timings=timings
        )
        return PostprocessResult(embedding, basis, kept)


def postprocess(
    features: np.ndarray | FeatureSource,
    image: np.ndarray,
    config: PostprocessConfig | None = None,
    *,
    timings: dict[str, float] | None = None,
) -> tuple[np.ndarray, PCABasis]:
    """C×H×W features + H×W×3 uint8 RGB image → (H×W×k float32 in [0, 1], PCA basis)."""
    result = run(features, image, config, timings=timings)
    return result.embedding, result.basis


class _FiniteCheck(FeatureSource):
    """A source whose bands are checked for NaN and Inf as they are read."""

    def __init__(self, inner: FeatureSource):
        self.inner = inner
        self.channels, self.height, self.width = inner.shape
        self.in_memory = inner.in_memory

    def rows(self, y0: int, y1: int) -> np.ndarray:
        band = self.inner.rows(y0, y1)
        if not np.isfinite(band).all():
            raise ValueError("features contain NaN or Inf; the model output is invalid")
        return band

    def materialize(self) -> FeatureSource:
        return _FiniteCheck(self.inner.materialize())


__all__ = [
    "MODE_MODULES",
    "PostprocessConfig",
    "PostprocessResult",
    "Postprocessor",
    "postprocess",
    "run",
]
