"""PyTorch backend: the reference implementation, and a GPU path where TensorRT is absent.

It runs the inference form of the network with weights taken from an sss-rt ONNX model (so it
runs the *same* weights as the other backends) or from a training checkpoint (``.pt``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sss_rt.backends.base import Backend, check_images
from sss_rt.errors import BackendUnavailableError, ModelError
from sss_rt.model_info import ModelInfo, initializers, read_model_info


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendUnavailableError(
            "the torch backend needs PyTorch (pip install 'sss-rt[train]')"
        ) from None
    return torch


def inference_net_from_onnx(path: str | os.PathLike[str]) -> tuple[Any, ModelInfo]:
    """Rebuild the inference-form module from the weights stored in an sss-rt ONNX model."""
    import onnx
    import torch
    from onnx import numpy_helper

    from sss_rt.export.inference_form import InferenceNet
    from sss_rt.training.model import HypercolumnNet, Normalize

    info = read_model_info(path)
    model = onnx.load(os.fspath(path))
    inits = initializers(model)
    net = InferenceNet(HypercolumnNet(info.backbone))
    net.normalize = Normalize(tuple(info.mean), tuple(info.std))
    expected = net.state_dict()
    found: dict[str, Any] = {}
    # Conv weights keep their parameter names; a bias is taken from the Conv node that uses the
    # named weight, whatever the bias tensor is called.
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in expected:
            continue
        prefix = node.input[1][: -len(".weight")]
        found[node.input[1]] = inits[node.input[1]]
        if len(node.input) > 2 and node.input[2]:
            found[prefix + ".bias"] = inits[node.input[2]]
    for key in expected:
        if key not in found and key in inits:
            found[key] = inits[key]
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ModelError(f"{path}: cannot map ONNX weights to the network (missing {missing[:3]})")
    state = {
        k: torch.from_numpy(numpy_helper.to_array(v).astype(np.float32)) for k, v in found.items()
    }
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: ONNX weights do not fit the network ({exc})") from None
    return net.eval(), info


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, model: str | os.PathLike[str], device: str = "auto", threads: int | None = None
    ):
        torch = _import_torch()
        from sss_rt.export.inference_form import InferenceNet

        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelError(f"model file not found: {path}")
        if path.endswith(".onnx"):
            net, info = inference_net_from_onnx(path)
        else:
            from sss_rt.training.checkpoint import load_network
            from sss_rt.training.model import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD

            train_net, meta = load_network(path)
            net = InferenceNet(train_net).eval()
            info = ModelInfo(
                meta["backbone"], FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD, training=meta
            )
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("device 'cuda' requested but PyTorch sees no CUDA GPU")
        if device != "cpu" and not device.startswith("cuda"):
            raise ValueError(f"unknown device {device!r} (use auto, cpu or cuda[:N])")
        if threads is not None:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self._device = device
        self._net = net.to(device)
        self._info = info

    @property
    def module(self) -> Any:
        """The underlying inference-form ``torch.nn.Module``."""
        return self._net

    def run(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(images).to(self._device)
            # C-contiguous N×C×H×W (the net may return channels-last memory; the post-processing
            # reads planes, and a strided array would be copied there, single-threaded)
            return self._net(x).float().contiguous().cpu().numpy()

    def close(self) -> None:
        self._net = None
        if self._device.startswith("cuda"):
            self._torch.cuda.empty_cache()
