"""sss-rt: semantic feature descriptors for Semantic Soft Segmentation, fast.

>>> from sss_rt import Extractor, SoftSegmenter
"""

from sss_rt._version import __version__
from sss_rt.errors import BackendUnavailableError, ImageError, ModelError, SssRtError
from sss_rt.extractor import ExtractionResult, Extractor, default_model_path
from sss_rt.model_info import ModelInfo
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.segmentation import SegmentConfig, SoftSegmentation, SoftSegmenter, segment

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
