"""Instance-balanced pixel sampling (P_inst instances × P_pix pixels each)."""

from __future__ import annotations

import numpy as np


def sample_pixels(
    instances: np.ndarray,
    rng: np.random.Generator,
    n_instances: int = 3,
    n_pixels: int = 1000,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Sample flat pixel indices and their instance ids from an H×W instance map.

    Ids ≤ 0 are unlabeled and never sampled. ``n_instances`` distinct instances are drawn at
    random (all of them when fewer exist) and ``n_pixels`` pixels inside each (with replacement
    when the mask is smaller). Returns None when fewer than 2 instances exist: such an image has
    no negative pairs, and it is skipped by the trainer.
    """
    flat = instances.reshape(-1)
    ids = np.unique(flat[flat > 0])
    if ids.size < 2:
        return None
    chosen = rng.choice(ids, size=min(n_instances, ids.size), replace=False)
    order = np.argsort(flat, kind="stable")
    sorted_ids = flat[order]
    index_parts, label_parts = [], []
    for inst in chosen:
        lo, hi = np.searchsorted(sorted_ids, [inst, inst + 1])
        members = order[lo:hi]
        pick = rng.choice(members, size=n_pixels, replace=members.size < n_pixels)
        index_parts.append(pick)
        label_parts.append(np.full(n_pixels, inst, dtype=np.int64))
    return np.concatenate(index_parts), np.concatenate(label_parts)
