"""Shared fixtures: small random-weight models exported once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


def randomize_batchnorm(net, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics so that folding is really exercised."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.2 - 0.1)


def make_net(backbone: str = "resnet18", seed: int = 0):
    torch = pytest.importorskip("torch")
    from sss_rt.network.model import HypercolumnNet

    torch.manual_seed(seed)
    net = HypercolumnNet(backbone)
    randomize_batchnorm(net, seed)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_net():
    return make_net("resnet18")


@pytest.fixture(scope="session")
def checkpoint_path(tiny_net, tmp_path_factory) -> Path:
    from sss_rt.network.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(
        path,
        {
            "backbone": "resnet18",
            "model": tiny_net.state_dict(),
            "meta": {"note": "random weights for tests"},
        },
    )
    return path


@pytest.fixture(scope="session")
def onnx_path(checkpoint_path, tmp_path_factory) -> Path:
    from sss_rt.export.onnx_export import export_checkpoint

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_checkpoint(checkpoint_path, path)
    return path


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def structured_scene(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of a few flat regions with noise, and 128-d features that follow the regions.

    Region means differ along different directions, so the top eigenvalues are well separated.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    labels = (
        (xx > w * 0.4).astype(int)
        + 2 * (yy > h * 0.6)
        + ((xx - w * 0.7) ** 2 + (yy - h * 0.3) ** 2 < (min(h, w) * 0.15) ** 2)
    )
    colors = rng.integers(20, 235, (labels.max() + 1, 3))
    image = np.clip(colors[labels] + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    centres = rng.normal(0, 1, (labels.max() + 1, 128)) * np.linspace(3, 0.5, 128)
    feats = centres[labels] + rng.normal(0, 0.3, (h, w, 128))
    return image, np.moveaxis(feats, -1, 0).astype(np.float32)
