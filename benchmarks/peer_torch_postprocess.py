"""Peer for the CUDA kernels: the exact post-processing written with PyTorch tensor ops.

The same rules as sss-rt's exact mode (truncated boxes ÷ N(x) — ``avg_pool2d`` with
``count_include_pad=False`` —, the color guided filter with a shared inverse, covariance and
projection in float64, eigendecomposition on the host with the same sign rule, [0, 1]
normalization). Runs on any torch device; the GPU check times it against the kernels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sss_rt.postprocess.pca import PCABasis, basis_from_moments, normalize_unit


def _mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Window mean over (2r+1)² truncated at the border, for (N, H, W) planes."""
    if r == 0:
        return x
    return F.avg_pool2d(x[None], 2 * r + 1, stride=1, padding=r, count_include_pad=False)[0]


def guided_filter(feats: torch.Tensor, guide: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """Filter (C, H, W) features with a (3, H, W) guide in [0, 1]."""
    mi = _mean(guide, r)
    ii = torch.stack([guide[i] * guide[j] for i in range(3) for j in range(3)])
    cov_i = _mean(ii, r) - torch.stack([mi[i] * mi[j] for i in range(3) for j in range(3)])
    sigma = cov_i.reshape(3, 3, *guide.shape[1:]).permute(2, 3, 0, 1).double()
    sigma = sigma + eps * torch.eye(3, dtype=torch.float64, device=guide.device)
    inv = torch.linalg.inv(sigma).float()  # (H, W, 3, 3)
    mp = _mean(feats, r)
    cov = torch.stack([_mean(feats * guide[k], r) - mi[k] * mp for k in range(3)], -1)
    a = torch.einsum("hwij,chwj->chwi", inv, cov)
    b = mp - (a * mi.permute(1, 2, 0)).sum(-1)
    ma = torch.stack([_mean(a[..., k], r) for k in range(3)], -1)
    return (ma * guide.permute(1, 2, 0)).sum(-1) + _mean(b, r)


def postprocess(
    feats: torch.Tensor, image: np.ndarray, r: int = 5, eps: float = 1e-2, k: int = 3
) -> tuple[np.ndarray, PCABasis]:
    """(C, H, W) features (any device) + H×W×3 uint8 image → (H×W×k in [0, 1], basis)."""
    c, h, w = feats.shape
    guide = torch.from_numpy(image).to(feats.device).permute(2, 0, 1).float() / 255.0
    q = guided_filter(feats.float(), guide, r, eps).reshape(c, -1).double()
    total = q.sum(1)
    basis = basis_from_moments(total.cpu().numpy(), (q @ q.T).cpu().numpy(), h * w, k)
    comps = torch.from_numpy(basis.components).to(q.device)
    y = (comps @ (q - torch.from_numpy(basis.mean).to(q.device)[:, None])).T
    return normalize_unit(y.float().cpu().numpy(), basis.degenerate()).reshape(h, w, k), basis
