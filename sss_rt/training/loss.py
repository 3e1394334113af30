"""The metric-learning loss of the seed (eq. 1): an N-pair-style loss on L2 distances."""

from __future__ import annotations

import math

import torch

#: below this squared distance the square root is clamped (its gradient is infinite at 0)
_MIN_SQ = 1e-12


def pairwise_distances(features: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of (P, d), through the Gram form, NaN-free at 0."""
    sq = features.pow(2).sum(dim=1)
    gram = features @ features.T
    d2 = sq[:, None] + sq[None, :] - 2.0 * gram
    return d2.clamp_min(_MIN_SQ).sqrt()


def same_term(d: torch.Tensor) -> torch.Tensor:
    """log((1 + e^D) / 2): 0 at D = 0, ≈ D − log 2 for large D."""
    return torch.nn.functional.softplus(d) - math.log(2.0)


def different_term(d: torch.Tensor) -> torch.Tensor:
    """log(1 + e^(−D) / 2): log 1.5 at D = 0, → 0 as D → ∞."""
    return torch.log1p(0.5 * torch.exp(-d))


def npair_l2_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of eq. 1 over all ordered pairs p ≠ q of sampled pixels.

    ``features`` is (P, d); ``labels`` (P,) instance ids. D = ||f_p − f_q||₂ / d.
    """
    n, dim = features.shape
    d = pairwise_distances(features) / dim
    same = labels[:, None] == labels[None, :]
    total = torch.where(same, same_term(d), different_term(d)).sum()
    # the diagonal (p = q) holds n same-instance terms at the clamped distance: remove them
    diagonal = n * same_term(torch.tensor(math.sqrt(_MIN_SQ) / dim, dtype=features.dtype))
    return (total - diagonal.to(features.device)) / (n * (n - 1))
