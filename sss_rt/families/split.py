"""How a family's graph is cut for split execution: the trunk and the head that reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sss_rt.bands import FeatureSource

#: makes one image's feature source from the trunk's outputs (C×h×w each, batch dimension
#: dropped, in the trunk's output order), the thread count, the head kernel variant the
#: precision chose (None: fp32) and, optionally, a runner of the split's ``dense_graph``
#: (a C×N float32 array in, its output out) on the backend's engine
SourceMaker = Callable[..., FeatureSource]


@dataclass(frozen=True)
class Split:
    """A graph cut for split execution: the trunk (serialized ONNX) and the head that reads
    its outputs. The trunk's first output is its input tap (full resolution, a few channels):
    a backend running the trunk in reduced precision keeps that one in fp32."""

    trunk: bytes
    source: SourceMaker
    #: a part of the head an engine may run instead of the host (ONNX, one input and one
    #: output, 1×C×1×pixels), or None
    dense_graph: bytes | None = None
