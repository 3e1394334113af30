"""Post-processing: feature bands + the image → the 3-d semantic feature descriptors.

One entry point for every mode and every source: :func:`run` reads a
:class:`~sss_rt.bands.FeatureSource` (the network's bands, computed on demand, or an array in
memory) with the mode's module — ``exact``, ``fast`` or ``matlab``, each a ``run(source, image,
config, keep_features, timings)`` — in bounded memory. :func:`postprocess` is the same on a
C×H×W array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sss_rt.bands import FeatureSource, as_source
from sss_rt.postprocess import exact, fast, matlab
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.pca import PCABasis

#: mode name → its implementation
MODES: dict[str, Callable[..., tuple[np.ndarray, PCABasis, FeatureSource]]] = {
    "exact": exact.run,
    "fast": fast.run,
    "matlab": matlab.run,
}


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
        embedding, basis, read = MODES[config.mode](source, image, config, keep_features, timings)
    kept = None
    if keep_features:
        read = read.materialize() if not read.in_memory else read
        kept = read.rows(0, read.height)
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


__all__ = ["MODES", "PostprocessConfig", "PostprocessResult", "postprocess", "run"]
