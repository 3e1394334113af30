"""PyTorch backend: the reference implementation, and a GPU path where TensorRT is absent.

It runs the inference form of the network with weights taken from an sss-rt ONNX model (so it
runs the *same* weights as the other backends) or from a training checkpoint (``.pt``). Split
execution (the default) runs the trunk once per image in PyTorch and evaluates the
full-resolution head in PyTorch for each band asked (:class:`TorchHeadSource`, on the backend's
device); ``execution="whole"`` runs the whole module at once.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sss_rt.backends.base import EXECUTIONS, Backend, check_image
from sss_rt.bands import ArraySource, FeatureSource
from sss_rt.errors import BackendUnavailableError, ModelError
from sss_rt.model_info import ModelInfo, initializers, read_model_info
from sss_rt.resample import linear_taps


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
        self,
        model: str | os.PathLike[str],
        device: str = "auto",
        threads: int | None = None,
        execution: str = "split",
    ):
        torch = _import_torch()
        from sss_rt.export.inference_form import InferenceNet

        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
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
        self._split = execution == "split"

    @property
    def module(self) -> Any:
        """The underlying inference-form ``torch.nn.Module``."""
        return self._net

    @property
    def splits(self) -> bool:
        return self._split

    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        torch = self._torch
        x = torch.from_numpy(check_image(image)[None]).to(self._device)
        net = self._net
        with torch.inference_mode():
            if whole or not self._split:
                # C-contiguous (the net may return channels-last memory; the post-processing
                # reads planes, and a strided array would be copied there, single-threaded)
                return ArraySource(net(x)[0].float().contiguous().cpu().numpy())
            x = net.normalize(x)
            bb = net.backbone
            pool1 = bb.maxpool(bb.relu(bb.bn1(bb.conv1(x))))
            t_in = F_relu(net.taps[0](x))
            del x
            t_p1 = F_relu(net.taps[1](pool1))
            # the deep taps' projection one tap at a time (as the ONNX Runtime trunk does):
            # each tap is dropped once projected, never concatenated
            res = bb.layer2(bb.layer1(pool1))
            del pool1
            weight = net.fuse_deep.weight
            deep, start = None, 0
            for tap, layer in zip(net.taps[2:], (None, bb.layer3, bb.layer4), strict=True):
                if layer is not None:
                    res = layer(res)
                width = tap.out_channels
                part = torch.nn.functional.conv2d(
                    F_relu(tap(res)), weight[:, start : start + width]
                )
                start += width
                deep = part if deep is None else deep.add_(part)
            del res
        return TorchHeadSource(net, t_in[0], t_p1[0], deep[0])

    def close(self) -> None:
        self._net = None
        if self._device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def F_relu(x: Any) -> Any:  # noqa: N802 - torch's functional name
    import torch.nn.functional as F

    return F.relu(x, inplace=True)


class TorchHeadSource(FeatureSource):
    """The inference form's full-resolution head in PyTorch, for any band of rows, on the
    trunk's device; bands come back as host arrays (``device_rows``: as device tensors)."""

    CHUNK_MB = 64

    def __init__(self, net: Any, t_in: Any, t_p1: Any, deep: Any):
        import torch

        self._torch = torch
        self.net = net
        self.t_in, self.t_p1, self.deep = t_in, t_p1, deep
        _, self.height, self.width = t_in.shape
        self.channels = net.head.out_channels
        dev = t_in.device

        def taps(out: int, size: int) -> tuple:
            i0, i1, wt = linear_taps(out, size)
            return torch.from_numpy(i0).to(dev), torch.from_numpy(i1).to(dev), torch.from_numpy(
                wt
            ).to(dev)

        self._y = (taps(self.height, t_p1.shape[1]), taps(self.height, deep.shape[1]))
        self._x = (taps(self.width, t_p1.shape[2]), taps(self.width, deep.shape[2]))

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.device_rows(y0, y1).cpu().numpy()

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.device_rows(y0, y1, x0, x1).cpu().numpy()

    def projected_rows(
        self,
        y0: int,
        y1: int,
        components: np.ndarray,
        shift: np.ndarray,
        threads: int | None = None,
    ) -> np.ndarray:
        """The projection folded into the last conv, in float64 (no 128-channel band)."""
        torch = self._torch
        head = self.net.head
        v = torch.from_numpy(np.asarray(components, np.float64)).to(self.t_in.device)
        s = torch.from_numpy(np.asarray(shift, np.float64)).to(self.t_in.device)
        weight = v @ head.weight[:, :, 0, 0].double()
        bias = v @ (head.bias.double() - s)
        return self.device_rows(y0, y1, project=(weight, bias)).cpu().numpy()

    def device_rows(
        self, y0: int, y1: int, x0: int = 0, x1: int | None = None, project: Any = None
    ) -> Any:
        """Rows ``y0:y1`` (columns ``x0:x1``) as a C×n×w float32 tensor on the device."""
        torch = self._torch
        net = self.net
        x1 = self.width if x1 is None else x1
        width = x1 - x0
        mid = net.fuse_bias.shape[1]
        out_c = self.channels if project is None else project[0].shape[0]
        out = torch.empty((out_c, y1 - y0, width), dtype=torch.float32, device=self.t_in.device)
        step = max(1, (self.CHUNK_MB << 20) // (mid * width * 4))
        with torch.inference_mode():
            for a in range(y0, y1, step):
                b = min(y1, a + step)
                hidden = self._hidden(a, b, x0, x1)
                if project is None:
                    res = torch.nn.functional.conv2d(hidden[None], net.head.weight, net.head.bias)
                    out[:, a - y0 : b - y0] = res[0]
                else:
                    weight, bias = project
                    flat = hidden.reshape(mid, -1).double()
                    res = weight @ flat + bias[:, None]
                    out[:, a - y0 : b - y0] = res.float().reshape(out_c, b - a, width)
        return out

    def _hidden(self, y0: int, y1: int, x0: int, x1: int) -> Any:
        torch = self._torch
        net = self.net
        h = torch.nn.functional.conv2d(self.t_in[None, :, y0:y1, x0:x1], net.fuse_input.weight)[0]
        for low, ys, xs, project in (
            (self.t_p1, self._y[0], self._x[0], net.fuse_pool1),
            (self.deep, self._y[1], self._x[1], None),
        ):
            i0, i1, wy = (t[y0:y1] for t in ys)
            lo, hi = int(i0.min()), int(i1.max()) + 1
            block = low[:, lo:hi]
            if project is not None:
                block = torch.nn.functional.conv2d(block[None], project.weight)[0]
            top, bottom = block[:, i0 - lo], block[:, i1 - lo]
            rows = torch.lerp(top, bottom, wy[None, :, None])
            xi0, xi1, xw = (t[x0:x1] for t in xs)
            h += torch.lerp(rows[:, :, xi0], rows[:, :, xi1], xw[None, None, :])
        h += net.fuse_bias[0]
        return torch.relu_(h)
