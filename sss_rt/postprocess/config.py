"""Post-processing settings."""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("exact", "fast", "matlab")
#: the mode used where none is named
DEFAULT_MODE = "exact"
ENGINES = ("auto", "native", "numpy")


@dataclass(frozen=True)
class PostprocessConfig:
    """Guided filter + PCA settings.

    ``mode``: ``"exact"`` (default) — every channel guided-filtered exactly, PCA on all pixels;
    ``"fast"`` — He & Sun's fast guided filter (coefficients on a grid subsampled by
    ``subsample``, bilinearly upsampled) and the covariance from that grid's pixels; the [0, 1]
    range is the exact filter's, evaluated at the fast output's most extreme pixels;
    ``"matlab"`` — the authors' MATLAB pre-processing (clamp to [−5, 5], 10×10 replicate-padded
    boxes, channel triples filtered per guide channel), see ``sss_rt.postprocess.matlab``.
    ``radius``: the guided filter's box is (2·radius+1)² pixels; windows are truncated at the image
    border and normalized by their true pixel count (He et al.'s reference rule).
    ``eps``: the guided filter's regularization, for a guide scaled to [0, 1].
    ``n_components``: PCA dimensions kept (3 for Semantic Soft Segmentation).
    ``engine``: ``"native"`` (the compiled kernel), ``"numpy"``, or ``"auto"`` (native if built).
    ``threads``: threads of the native engine (default: the CPUs this process may use).
    ``band_mb``: memory for one band of filtered rows (bounds peak memory; same result).
    ``chunk``: channels filtered together by the NumPy engine (bounds memory; same result).
    """

    mode: str = DEFAULT_MODE
    radius: int = 5
    eps: float = 1e-2
    n_components: int = 3
    subsample: int = 4
    engine: str = "auto"
    threads: int | None = None
    band_mb: int = 128
    chunk: int = 16

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.radius < 0:
            raise ValueError("radius must be >= 0")
        if not self.eps > 0:
            raise ValueError("eps must be > 0")
        if self.n_components < 1:
            raise ValueError("n_components must be >= 1")
        if self.subsample < 1:
            raise ValueError("subsample must be >= 1")
        if self.chunk < 1 or self.band_mb < 1:
            raise ValueError("chunk and band_mb must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1")
