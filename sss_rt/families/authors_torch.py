"""The authors' network as a PyTorch module, rebuilt from an imported ONNX model's weights.

The same computation as :func:`~sss_rt.families.authors_graph.build_onnx`, in PyTorch ops:
TensorFlow ``SAME`` padding made explicit (``F.pad`` before a stride-2 convolution or pool,
the extra pixel at the end), batch norm with each image's own statistics
(``F.instance_norm``, ε = 1e-3), TensorFlow 1's asymmetric bilinear resize from
:func:`sss_rt.resample.asymmetric_taps`. Used by the torch backend (``--backend torch``): the
whole graph (also on CUDA), or the trunk here and the head in bands on the host
(:meth:`AuthorsNet.trunk_source`).
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sss_rt.errors import ModelError
from sss_rt.families.authors_graph import BN_EPS, MEAN_BGR, PAD, TAPS, blocks, crop_pad
from sss_rt.model_info import ModelInfo, initializers, read_model_info
from sss_rt.resample import asymmetric_taps


def _same_pad(x: torch.Tensor, k: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's SAME padding for a k×k window at ``stride`` (the extra pixel at the end)."""
    pads = []
    for size in (x.shape[3], x.shape[2]):
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """TensorFlow 1's ``resize_bilinear`` (asymmetric) of N×C×h×w to height×width."""
    out = x
    for axis, size in ((2, height), (3, width)):
        i0, i1, w = (torch.from_numpy(a).to(x.device) for a in asymmetric_taps(size, x.shape[axis]))
        a, b = out.index_select(axis, i0), out.index_select(axis, i1)
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        out = a + (b - a) * w.view(shape)
    return out


class AuthorsNet(torch.nn.Module):
    """The authors' network on N×H×W×3 uint8 RGB (N = 1), giving N×128×H×W float32.

    ``weights``: the imported ONNX model's initializers by name (float32 arrays).
    """

    def __init__(self, weights: dict[str, np.ndarray], pad: int = PAD):
        super().__init__()
        self.pad = pad
        self.params = torch.nn.ParameterDict()
        for name, value in weights.items():
            key = name.replace("/", "__").replace(".", "_")
            self.params[key] = torch.nn.Parameter(torch.from_numpy(value), requires_grad=False)
        self.register_buffer("mean", torch.tensor(MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1))

    def p(self, name: str) -> torch.Tensor:
        return self.params[name.replace("/", "__").replace(".", "_")]

    def _conv(self, x, scope, k, stride=1, dilation=1, bias=False):  # type: ignore[no-untyped-def]
        if stride > 1 and k > 1:
            x, padding = _same_pad(x, k, stride), 0
        else:
            padding = (k - 1) * dilation // 2
        b = self.p(f"{scope}.bias") if bias else None
        return F.conv2d(x, self.p(f"{scope}.weight"), b, stride, padding, dilation)

    def _bn(self, x, scope, relu):  # type: ignore[no-untyped-def]
        x = F.instance_norm(x, weight=self.p(f"{scope}.gamma"), bias=self.p(f"{scope}.beta"),
                            eps=BN_EPS)  # fmt: skip
        return F.relu(x) if relu else x

    def padded_input(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().flip(1) - self.mean
        p = self.pad
        return F.pad(x, (p, p, p, p), mode="reflect") if p else x

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five taps after their convolutions (before the resize), :data:`TAPS` order."""
        image = self.padded_input(images)
        x = self._bn(self._conv(image, "conv1", 7, stride=2), "bn_conv1", relu=True)
        x = F.max_pool2d(_same_pad(x, 3, 2, value=-math.inf), 3, 2)
        found = {"input": image, "pool1": x}
        for b in blocks():
            y = self._bn(self._conv(x, f"{b.name}_branch2a", 1, b.stride), f"{b.bn}_branch2a", True)
            y = self._bn(self._conv(y, f"{b.name}_branch2b", 3, 1, b.dilation),
                         f"{b.bn}_branch2b", True)  # fmt: skip
            y = self._bn(self._conv(y, f"{b.name}_branch2c", 1), f"{b.bn}_branch2c", False)
            if b.projection:
                s = self._bn(self._conv(x, f"{b.name}_branch1", 1, b.stride),
                             f"{b.bn}_branch1", False)  # fmt: skip
            else:
                s = x
            found[b.name] = total = s + y
            x = found[f"{b.name}_relu"] = F.relu(total)
            if b.name == "res5c":
                break
        return [
            self._conv(found[layer], f"hypercolumn_layers/{name}", k, bias=True)
            for name, layer, k, _, _ in TAPS
        ]

    def head(self, taps: list[torch.Tensor]) -> torch.Tensor:
        height, width = taps[0].shape[2:]
        parts = [taps[0]] + [_resize(t, height, width) for t in taps[1:]]
        x = F.relu(torch.cat(parts, 1))
        acts = []
        for layer in ("fc1_matting", "fc2_matting"):
            x = F.conv2d(x, self.p(f"{layer}/a.weight"))
            x = F.relu(F.conv2d(x, self.p(f"{layer}/b.weight"), self.p(f"{layer}/b.bias")))
            acts.append(x)
        out = F.conv2d(torch.cat(acts, 1), self.p("fc3_matting.weight"), self.p("fc3_matting.bias"))
        p = self.pad
        return out[:, :, p : out.shape[2] - p, p : out.shape[3] - p] if p else out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.taps(images))

    @cached_property
    def head_weights(self) -> Any:
        """The dense layers as host matrices (:class:`AuthorsHeadWeights`), made once."""
        from sss_rt.families.authors import AuthorsHeadWeights

        return AuthorsHeadWeights.from_arrays(
            lambda name: self.p(name).detach().cpu().numpy(), self.pad
        )

    def trunk_source(self, images: torch.Tensor, threads: int | None) -> Any:
        """The trunk here, the head in bands on the host (:class:`AuthorsHeadSource`)."""
        from sss_rt.families.authors import AuthorsHeadSource

        taps = [t[0].float().cpu().numpy() for t in self.taps(images)]
        return AuthorsHeadSource(self.head_weights, taps, threads)


def authors_net_from_onnx(path: str | os.PathLike[str]) -> tuple[AuthorsNet, ModelInfo]:
    """Rebuild :class:`AuthorsNet` from an imported model's initializers."""
    import onnx
    from onnx import numpy_helper

    info = read_model_info(path)
    model = onnx.load(os.fspath(path))
    inits = initializers(model)
    pad = crop_pad(model)
    skip = {"bgr", "mean", "pads", "crop_starts", "crop_ends", "crop_axes"}
    weights = {
        name: numpy_helper.to_array(t).astype(np.float32)
        for name, t in inits.items()
        if name not in skip
    }
    try:
        net = AuthorsNet(weights, pad)
        for name, _, _, _, _ in TAPS:
            net.p(f"hypercolumn_layers/{name}.weight")
    except KeyError as exc:
        raise ModelError(f"{path}: not the authors' graph (no {exc})") from None
    return net.eval(), info
