"""Export a trained network to ONNX (inference form, uint8 NHWC input, dynamic N/H/W)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import onnx

from sss_rt.model_info import (
    INPUT_NAME,
    METADATA_PREFIX,
    OUTPUT_NAME,
    ModelInfo,
)

DEFAULT_OPSET = 17


def export_onnx(
    net: Any,
    out_path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    training_info: dict[str, Any] | None = None,
) -> ModelInfo:
    """Write the inference form of ``net`` (a ``HypercolumnNet``) to ``out_path`` as ONNX.

    The file is written to a temporary name, checked with ``onnx.checker`` and renamed into
    place, so a failed export never leaves a partial model behind.
    """
    import torch
    from sss_rt.export.inference_form import InferenceNet

    from sss_rt.training.model import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD

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
            training=dict(training_info or {}),
        )
        for key, value in info.to_metadata().items():
            entry = model.metadata_props.add()
            entry.key = key
            entry.value = value
        model.producer_name = "sss-rt"
        onnx.checker.check_model(model)
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
) -> ModelInfo:
    """Load an sss-rt training checkpoint (weights only) and export it to ONNX."""
    from sss_rt.training.checkpoint import load_network

    net, meta = load_network(checkpoint)
    training_info = dict(meta)
    training_info["checkpoint_sha256"] = sha256_file(checkpoint)
    return export_onnx(net, out_path, opset=opset, training_info=training_info)


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["DEFAULT_OPSET", "METADATA_PREFIX", "export_checkpoint", "export_onnx", "sha256_file"]
