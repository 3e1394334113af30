"""Loading an sss-rt ONNX model for a backend: checked, its family's precision rules applied,
replaced by its int8 form where asked. How a model is cut for split execution is its family's
(:mod:`sss_rt.families`)."""

from __future__ import annotations

import os
from typing import Any

from sss_rt.errors import ModelError
from sss_rt.families import family_of


def load_feature_model(path: str, precision: str) -> tuple[Any, str, dict[str, str]]:
    """A checked sss-rt ONNX model: (loaded graph, its path, its metadata). For ``int8`` an
    unquantized model is replaced by its quantized form (made once, then cached). A precision
    the model's family does not run is a :class:`ModelError`."""
    import onnx

    from sss_rt.model_info import METADATA_PREFIX, QUANTIZATION_KEY

    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    try:
        graph = onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX files
        raise ModelError(f"not a readable ONNX model: {path} ({type(exc).__name__})") from None
    props = {p.key: p.value for p in graph.metadata_props}
    if not any(k.startswith(METADATA_PREFIX) for k in props):
        raise ModelError(f"{path} is an ONNX model but not an sss-rt feature model")
    family_of(props).check_precision(precision)
    if precision == "int8" and QUANTIZATION_KEY not in props:
        from sss_rt.export.quantize import quantized_model

        path = os.fspath(quantized_model(path))  # made once, then cached
        graph = onnx.load(path)
    return graph, path, props
