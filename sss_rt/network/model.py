"""The hypercolumn feature network of Semantic Soft Segmentation (training form).

A DeepLab-style atrous ResNet (output stride 8) whose parameter names follow torchvision's
ResNet, so torchvision ResNet and DeepLabV3-ResNet state dicts load directly. Five taps (input,
pool1, res3, res4, res5) are each compressed by a 3×3 conv + ReLU, upsampled bilinearly to the
input size, concatenated (1024 channels) and reduced by 1×1 convs to 512 (+ ReLU) and 128.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sss_rt.resample import linear_taps

#: ImageNet statistics (RGB, 0-1 scale) used by torchvision backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Output channels of the 3×3 compression conv of each tap (input, pool1, res3, res4, res5).
TAP_CHANNELS = (4, 124, 128, 256, 512)
TAP_NAMES = ("input", "pool1", "res3", "res4", "res5")
HIDDEN_DIM = 512
FEATURE_DIM = 128


@dataclass(frozen=True)
class BackboneSpec:
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def tap_in_channels(self) -> tuple[int, int, int, int, int]:
        e = self.expansion
        return (3, 64, 128 * e, 256 * e, 512 * e)


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("basic", (2, 2, 2, 2)),
    "resnet34": BackboneSpec("basic", (3, 4, 6, 3)),
    "resnet50": BackboneSpec("bottleneck", (3, 4, 6, 3)),
    "resnet101": BackboneSpec("bottleneck", (3, 4, 23, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class AtrousResNet(nn.Module):
    """ResNet with torchvision parameter names; layer3/layer4 dilated (output stride 8).

    Dilation follows torchvision's ``replace_stride_with_dilation=[False, True, True]``: the first
    block of a dilated layer keeps the previous dilation, the following blocks use the new one.
    """

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        block = Bottleneck if spec.block == "bottleneck" else BasicBlock
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, spec.layers[0], 1, dilate=False)
        self.layer2 = self._make_layer(block, 128, spec.layers[1], 2, dilate=False)
        self.layer3 = self._make_layer(block, 256, spec.layers[2], 2, dilate=True)
        self.layer4 = self._make_layer(block, 512, spec.layers[3], 2, dilate=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[nn.Module], planes: int, blocks: int, stride: int, dilate: bool
    ) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, self.dilation, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return the (pool1, res3, res4, res5) activations for a normalized NCHW input."""
        pool1 = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        res3 = self.layer2(self.layer1(pool1))
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        return pool1, res3, res4, res5


class Normalize(nn.Module):
    """uint8 (or 0-255 float) NHWC RGB → normalized float NCHW."""

    def __init__(
        self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
    ):
        super().__init__()
        scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # cast first: the exported graph's uint8 input then feeds a Cast, as TensorRT requires
        x = x.to(torch.float32).permute(0, 3, 1, 2)
        return x * self.scale + self.shift


class HypercolumnNet(nn.Module):
    """The training form of the feature network: NHWC uint8 RGB in, N×128×H×W features out.

    ``feature_scale`` is a fixed factor on the 128-d output (1 in the seed). In eq. 1 it acts as
    a smaller normalizer d/scale: a network trained from scratch reaches distances where the loss
    saturates (and separates pairs one by one) without growing its weights against the weight
    decay. The inference form folds it into the last conv.
    """

    def __init__(
        self, backbone: str = "resnet101", dropout: float = 0.5, feature_scale: float = 1.0
    ):
        super().__init__()
        if not feature_scale > 0:
            raise ValueError(f"feature_scale must be positive, got {feature_scale}")
        self.feature_scale = float(feature_scale)
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        self.backbone_name = backbone
        spec = BACKBONES[backbone]
        self.normalize = Normalize()
        self.backbone = AtrousResNet(spec)
        self.taps = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, padding=1)
            for cin, cout in zip(spec.tap_in_channels, TAP_CHANNELS, strict=True)
        )
        self.drop1 = nn.Dropout(dropout)
        self.fuse = nn.Conv2d(sum(TAP_CHANNELS), HIDDEN_DIM, 1)
        self.drop2 = nn.Dropout(dropout)
        self.head = nn.Conv2d(HIDDEN_DIM, FEATURE_DIM, 1)
        for m in self.new_layers():
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def new_layers(self) -> list[nn.Conv2d]:
        """The layers that are not part of the backbone (trained with the higher learning rate)."""
        return [*self.taps, self.fuse, self.head]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.normalize(image)
        size = x.shape[-2:]
        sources = (x, *self.backbone.forward_taps(x))
        columns = [
            F.interpolate(F.relu(tap(src)), size=size, mode="bilinear", align_corners=False)
            for tap, src in zip(self.taps, sources, strict=True)
        ]
        h = torch.cat(columns, dim=1)
        h = F.relu(self.fuse(self.drop1(h)))
        out = self.head(self.drop2(h))
        return out * self.feature_scale if self.feature_scale != 1.0 else out

    def forward_at(self, image: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """The features of :meth:`forward` at flat pixel indices only: ``(len(pixels), 128)``.

        ``image`` holds one NHWC image. The taps are interpolated at the pixels with the rule of
        ``F.interpolate(..., mode="bilinear", align_corners=False)`` and the per-pixel layers run
        on those pixels alone, so a training step that reads the loss at a few thousand pixels
        does not pay for the full-resolution head. Dropout masks are drawn per given pixel,
        which is the training form's distribution at those pixels.
        """
        if image.shape[0] != 1:
            raise ValueError("forward_at takes one image")
        x = self.normalize(image)
        H, W = x.shape[-2:]
        sources = (x, *self.backbone.forward_taps(x))
        taps = [F.relu(tap(src))[0] for tap, src in zip(self.taps, sources, strict=True)]
        fuse_w = self.fuse.weight.flatten(1)
        if self.training and self.drop1.p > 0:
            h = torch.cat([_sample(t, pixels, H, W) for t in taps], dim=1)
            h = F.linear(self.drop1(h), fuse_w, self.fuse.bias)
        else:
            # without dropout before it, the fuse conv (1×1, linear) commutes with the bilinear
            # interpolation: taps are projected to 512 channels at their own resolution, and
            # those sharing a resolution are summed before they are sampled
            # (a full-resolution tap is sampled first: it has fewer channels than 512)
            by_size: dict[tuple[int, int], torch.Tensor] = {}
            h = self.fuse.bias
            start = 0
            for t in taps:
                part = fuse_w[:, start : start + t.shape[0]]
                start += t.shape[0]
                if tuple(t.shape[1:]) == (H, W):
                    h = h + _sample(t, pixels, H, W) @ part.T
                    continue
                projected = torch.mm(part, t.flatten(1)).view(-1, *t.shape[1:])
                key = tuple(t.shape[1:])
                by_size[key] = by_size[key] + projected if key in by_size else projected
            for t in by_size.values():
                h = h + _sample(t, pixels, H, W)
        out = F.linear(self.drop2(F.relu(h)), self.head.weight.flatten(1), self.head.bias)
        return out * self.feature_scale if self.feature_scale != 1.0 else out


def _sample(t: torch.Tensor, pixels: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Rows ``(len(pixels), C)`` of C×h×w ``t`` resized to H×W (bilinear, half-pixel centres,
    edges clamped: ``F.interpolate``'s rule, the taps of ``linear_taps``) at flat H×W pixel
    indices."""
    h, w = t.shape[1:]
    rows = t.flatten(1).T
    if (h, w) == (H, W):
        return rows[pixels]
    ys = torch.div(pixels, W, rounding_mode="floor")
    xs = pixels - ys * W

    def taps(dst: torch.Tensor, n_in: int, n_out: int):
        i0, i1, w1 = (torch.from_numpy(a).to(t.device) for a in linear_taps(n_out, n_in))
        return i0[dst], i1[dst], w1[dst].to(t.dtype)

    y0, y1, ly = taps(ys, h, H)
    x0, x1, lx = taps(xs, w, W)
    # an n × (h·w) interpolation matrix with four entries per row: its product (and the
    # product's gradient) is much cheaper than four gathers and their scatter-adds
    cols = torch.stack((y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1), dim=1)
    vals = torch.stack(((1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx), dim=1)
    row_ids = torch.arange(pixels.numel(), device=t.device).repeat_interleave(4)
    matrix = torch.sparse_coo_tensor(
        torch.stack((row_ids, cols.reshape(-1))),
        vals.reshape(-1),
        (pixels.numel(), h * w),
        check_invariants=False,
    )
    return torch.sparse.mm(matrix, rows)
