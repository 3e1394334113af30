"""sss-rt: semantic feature descriptors for Semantic Soft Segmentation, fast.

>>> from sss_rt import Extractor, SoftSegmenter
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sss_rt._version import __version__
from sss_rt.errors import BackendUnavailableError, ImageError, ModelError, SssRtError

if TYPE_CHECKING:
    from sss_rt.extractor import ExtractionResult, Extractor, default_model_path
    from sss_rt.model_info import ModelInfo
    from sss_rt.postprocess.config import PostprocessConfig
    from sss_rt.segmentation import SegmentConfig, SoftSegmentation, SoftSegmenter, segment

#: public name → its module, imported on first use (``import sss_rt.postprocess.cuda`` does not
#: load the extractor's image I/O or the segmentation's SciPy)
_LAZY = {
    "ExtractionResult": "sss_rt.extractor",
    "Extractor": "sss_rt.extractor",
    "default_model_path": "sss_rt.extractor",
    "ModelInfo": "sss_rt.model_info",
    "PostprocessConfig": "sss_rt.postprocess.config",
    "SegmentConfig": "sss_rt.segmentation",
    "SoftSegmentation": "sss_rt.segmentation",
    "SoftSegmenter": "sss_rt.segmentation",
    "segment": "sss_rt.segmentation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sss_rt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BackendUnavailableError",
    "ExtractionResult",
    "Extractor",
    "ImageError",
    "ModelError",
    "ModelInfo",
    "PostprocessConfig",
    "SegmentConfig",
    "SoftSegmentation",
    "SoftSegmenter",
    "SssRtError",
    "__version__",
    "default_model_path",
    "segment",
]
