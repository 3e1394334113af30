"""Post-processing settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PostprocessConfig:
    """Guided filter + PCA settings.

    ``radius``: the guided filter's box is (2·radius+1)² pixels; windows are truncated at the image
    border and normalized by their true pixel count (He et al.'s reference rule).
    ``eps``: the guided filter's regularization, for a guide scaled to [0, 1].
    ``n_components``: PCA dimensions kept (3 for Semantic Soft Segmentation).
    ``chunk``: channels filtered together (bounds memory; does not change the result).
    """

    radius: int = 5
    eps: float = 1e-2
    n_components: int = 3
    chunk: int = 16

    def __post_init__(self) -> None:
        if self.radius < 0:
            raise ValueError("radius must be >= 0")
        if not self.eps > 0:
            raise ValueError("eps must be > 0")
        if self.n_components < 1:
            raise ValueError("n_components must be >= 1")
        if self.chunk < 1:
            raise ValueError("chunk must be >= 1")
