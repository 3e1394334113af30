"""The inference form of the feature network, mathematically identical to the training form.

* Every BatchNorm is folded into the convolution before it.
* The 1024→512 1×1 "fuse" conv is split by tap and applied *before* upsampling: a 1×1 conv
  commutes with bilinear resampling (both are linear, one acts on channels and the other on
  pixels), so the 512-channel projection of each tap can be upsampled instead of the tap itself.
  The res3/res4/res5 taps share one resolution (output stride 8), so their projections are summed
  at low resolution and upsampled once. The fuse bias is added once, at full resolution.
* Dropout disappears (evaluation).
* The training form's fixed ``feature_scale`` is folded into the last conv's weights and bias.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from sss_rt.network.model import TAP_CHANNELS, HypercolumnNet


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a conv with bias equal to ``bn(conv(x))`` in evaluation mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _fold_module(module: nn.Module) -> None:
    """Fold conv→bn pairs named (convK, bnK) and downsample (conv, bn) in place."""
    for name, child in list(module.named_children()):
        if name.startswith("bn"):
            continue
        if name.startswith("conv") and hasattr(module, "bn" + name[4:]):
            setattr(module, name, fold_batchnorm(child, getattr(module, "bn" + name[4:])))
            setattr(module, "bn" + name[4:], nn.Identity())
        elif name == "downsample" and isinstance(child, nn.Sequential):
            setattr(module, name, fold_batchnorm(child[0], child[1]))
        else:
            _fold_module(child)


def _conv1x1(weight: torch.Tensor) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(weight)
    return conv


class InferenceNet(nn.Module):
    """NHWC uint8 RGB in, N×128×H×W float32 features out; see the module docstring."""

    def __init__(self, net: HypercolumnNet):
        super().__init__()
        net = copy.deepcopy(net).eval()
        _fold_module(net.backbone)
        self.backbone_name = net.backbone_name
        self.normalize = net.normalize
        self.backbone = net.backbone
        self.taps = net.taps
        w = net.fuse.weight.detach()
        bounds = [0]
        for c in TAP_CHANNELS:
            bounds.append(bounds[-1] + c)
        parts = [w[:, a:b] for a, b in itertools.pairwise(bounds)]
        self.fuse_input = _conv1x1(parts[0])
        self.fuse_pool1 = _conv1x1(parts[1])
        self.fuse_deep = _conv1x1(torch.cat(parts[2:], dim=1))
        self.fuse_bias = nn.Parameter(net.fuse.bias.detach().clone().view(1, -1, 1, 1))
        self.head = net.head
        if net.feature_scale != 1.0:
            with torch.no_grad():
                self.head.weight.mul_(net.feature_scale)
                self.head.bias.mul_(net.feature_scale)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.normalize(image)
        size = x.shape[-2:]
        pool1, res3, res4, res5 = self.backbone.forward_taps(x)
        t_in, t_p1, t3, t4, t5 = (
            F.relu(tap(src))
            for tap, src in zip(self.taps, (x, pool1, res3, res4, res5), strict=True)
        )
        deep = self.fuse_deep(torch.cat((t3, t4, t5), dim=1))
        h = (
            self.fuse_input(t_in)
            + F.interpolate(self.fuse_pool1(t_p1), size=size, mode="bilinear", align_corners=False)
            + F.interpolate(deep, size=size, mode="bilinear", align_corners=False)
            + self.fuse_bias
        )
        return self.head(F.relu(h))
