"""The training-form network: architecture, naming, dilation and backbone loading."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from conftest import make_net  # noqa: E402

from sss_rt.network.model import (  # noqa: E402
    BACKBONES,
    TAP_CHANNELS,
    HypercolumnNet,
)
from sss_rt.training.init import load_backbone  # noqa: E402


def torchvision_resnet_keys(layers, bottleneck: bool) -> set[str]:
    """torchvision's ResNet state-dict keys (without fc), written out from its naming scheme."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", *(f"bn1.{s}" for s in bn)}
    convs = 3 if bottleneck else 2
    for li, n in enumerate(layers, start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            for c in range(1, convs + 1):
                keys.add(f"{p}.conv{c}.weight")
                keys.update(f"{p}.bn{c}.{s}" for s in bn)
            if b == 0 and (li > 1 or bottleneck):
                keys.add(f"{p}.downsample.0.weight")
                keys.update(f"{p}.downsample.1.{s}" for s in bn)
    return keys


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_keys_match_torchvision(name):
    spec = BACKBONES[name]
    net = HypercolumnNet(name)
    expected = torchvision_resnet_keys(spec.layers, spec.block == "bottleneck")
    assert set(net.backbone.state_dict()) == expected


def test_resnet101_has_the_papers_layers():
    net = HypercolumnNet("resnet101")
    assert len(net.backbone.layer3) == 23  # res4a … res4b22
    assert [t.out_channels for t in net.taps] == list(TAP_CHANNELS)
    assert [t.in_channels for t in net.taps] == [3, 64, 512, 1024, 2048]
    assert net.fuse.in_channels == 1024 and net.fuse.out_channels == 512
    assert net.head.in_channels == 512 and net.head.out_channels == 128


def test_dilation_follows_torchvision_and_output_stride_is_8():
    net = HypercolumnNet("resnet50").eval()
    l3 = [b.conv2.dilation[0] for b in net.backbone.layer3]
    l4 = [b.conv2.dilation[0] for b in net.backbone.layer4]
    assert l3 == [1] + [2] * (len(l3) - 1)
    assert l4 == [2] + [4] * (len(l4) - 1)
    x = torch.zeros(1, 3, 64, 96)
    with torch.no_grad():
        pool1, res3, res4, res5 = net.backbone.forward_taps(x)
    assert pool1.shape[-2:] == (16, 24)
    assert res3.shape[-2:] == res4.shape[-2:] == res5.shape[-2:] == (8, 12)
    assert res5.shape[1] == 2048


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (64, 64)])
def test_output_shape_any_size(size):
    net = make_net("resnet18")
    x = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 128, *size)
    assert torch.isfinite(y).all()


def test_dropout_active_only_in_training():
    net = make_net("resnet18")
    x = torch.randint(0, 256, (1, 24, 24, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.train()
        torch.manual_seed(0)
        a = net(x)
        torch.manual_seed(1)
        b = net(x)
    assert not torch.equal(a, b)


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (9, 200)])
@pytest.mark.parametrize("hypercolumn_dropout", [False, True])
def test_forward_at_equals_forward_at_those_pixels(size, hypercolumn_dropout):
    """Values and gradients of the sampled-pixel head match the full-resolution form."""
    net = make_net("resnet18", seed=3)
    if hypercolumn_dropout:
        # training mode takes the unprojected path (dropout before the fuse conv); a tiny p
        # keeps it active but (with this seed) drops nothing, and BatchNorm stays in eval
        net.train()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
        net.drop1.p = net.drop2.p = 1e-12
    x = torch.randint(
        0, 256, (1, *size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    gen = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, size[0] * size[1], (300,), generator=gen).unique()
    pixels = torch.cat((pixels, torch.tensor([0, size[0] * size[1] - 1])))  # both corners
    weights = torch.randn(pixels.numel(), 128, generator=gen)

    full = net(x)[0].flatten(1).T[pixels]
    (full * weights).sum().backward()
    want = {k: p.grad.clone() for k, p in net.named_parameters()}
    net.zero_grad()
    at = net.forward_at(x, pixels)
    (at * weights).sum().backward()

    scale = full.abs().max()
    assert (at - full).abs().max() <= 1e-5 * scale
    for name in ("fuse.weight", "head.weight", "taps.1.weight", "taps.4.weight", "conv1.weight"):
        key = name if not name.startswith("conv1") else "backbone." + name
        g, w = dict(net.named_parameters())[key].grad, want[key]
        assert (g - w).abs().max() <= 1e-4 * w.abs().max(), name


def test_load_deeplabv3_style_state_dict(tmp_path):
    source = make_net("resnet50", seed=3)
    state = {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(256, 2048, 3, 3)
    state["aux_classifier.0.weight"] = torch.zeros(256, 1024, 3, 3)
    path = tmp_path / "deeplab.pth"
    torch.save(state, path)
    target = HypercolumnNet("resnet50")
    report = load_backbone(target, path)
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == 2
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(target.backbone.state_dict()[k], v)


def test_load_imagenet_resnet_reports_fc_and_missing(tmp_path):
    source = make_net("resnet18", seed=4)
    state = dict(source.backbone.state_dict())
    state["fc.weight"] = torch.zeros(1000, 512)
    del state["layer4.1.conv2.weight"]
    report = load_backbone(HypercolumnNet("resnet18"), state)
    assert report.ignored == 1
    assert report.missing == ["layer4.1.conv2.weight"]
