"""Export a trained network to ONNX (inference form, uint8 NHWC input, dynamic N/H/W)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import onnx
from sss_rt.export import tensorrt_rules

from sss_rt.errors import ModelError
from sss_rt.model_info import (
    INPUT_NAME,
    METADATA_PREFIX,
    OUTPUT_NAME,
    ModelInfo,
    sha256_file,
)

DEFAULT_OPSET = 17


def store_weights_fp16(model: onnx.ModelProto, min_elements: int = 1024) -> int:
    """Store large float32 initializers as float16, cast back to float32 inside the graph.

    Computation stays in float32 (ONNX Runtime folds the casts when it loads the model); only the
    stored weights are rounded. Returns the number of tensors converted.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    casts = []
    kept = []
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type != onnx.TensorProto.FLOAT or arr.size < min_elements:
            kept.append(init)
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
        kept.append(half)
        casts.append(
            helper.make_node(
                "Cast",
                [half.name],
                [init.name],
                to=onnx.TensorProto.FLOAT,
                name=init.name + "__cast",
            )
        )
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(casts + nodes)
    return len(casts)


def export_onnx(
    net: Any,
    out_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    training_info: dict[str, Any] | None = None,
    fp16_weights: bool = False,
) -> ModelInfo:
    """Write the inference form of ``net`` (a ``HypercolumnNet``) to ``out_path`` as ONNX.

    The file is written to a temporary name, checked with ``onnx.checker`` and renamed into
    place, so a failed export never leaves a partial model behind. ``fp16_weights`` stores the
    weights in half precision (half the file size; computation stays float32).
    """
    import torch
    from sss_rt.export.inference_form import InferenceNet

    from sss_rt.network.model import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD

    if opset < 17:
        raise ValueError("opset must be >= 17")
    out_path = Path(out_path)
    inference = InferenceNet(net).eval()
    dummy = torch.zeros(1, 67, 93, 3, dtype=torch.uint8)
    tmp = out_path.with_name(out_path.name + ".tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                inference,
                (dummy,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 1: "height", 2: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                },
                opset_version=opset,
                do_constant_folding=True,
            )
        model = onnx.load(str(tmp))
        info = ModelInfo(
            backbone=inference.backbone_name,
            feature_dim=FEATURE_DIM,
            mean=tuple(IMAGENET_MEAN),
            std=tuple(IMAGENET_STD),
            input_layout="NHWC uint8 RGB",
            training={**(training_info or {}), "weights": "fp16" if fp16_weights else "fp32"},
        )
        for key, value in info.to_metadata().items():
            entry = model.metadata_props.add()
            entry.key = key
            entry.value = value
        model.producer_name = "sss-rt"
        if fp16_weights:
            store_weights_fp16(model)
        onnx.checker.check_model(model)
        trt_problems = tensorrt_rules.problems(model)
        if trt_problems:  # every exported graph must be one TensorRT's parser accepts
            raise ModelError(
                "the exported graph breaks TensorRT's rules: " + "; ".join(trt_problems)
            )
        onnx.save(model, str(tmp))
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return info


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    fp16_weights: bool = False,
) -> ModelInfo:
    """Load an sss-rt training checkpoint (weights only) and export it to ONNX."""
    from sss_rt.network.checkpoint import load_network

    net, meta = load_network(checkpoint)
    training_info = dict(meta)
    training_info["checkpoint_sha256"] = sha256_file(checkpoint)
    return export_onnx(
        net, out_path, opset=opset, training_info=training_info, fp16_weights=fp16_weights
    )


__all__ = ["DEFAULT_OPSET", "METADATA_PREFIX", "export_checkpoint", "export_onnx", "sha256_file"]
