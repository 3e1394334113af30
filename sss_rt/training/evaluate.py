"""Held-out evaluation: pixel-pair ranking AUC and a clustering score (adjusted Rand index).

Runs on any backend (no torch needed when the model is ONNX).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def ranking_auc(same_dist: np.ndarray, diff_dist: np.ndarray) -> float:
    """P(distance of a different-instance pair > distance of a same-instance pair), ties ½."""
    values = np.concatenate([same_dist, diff_dist])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, np.float64)
    sorted_vals = values[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    n_s, n_d = same_dist.size, diff_dist.size
    r_d = ranks[n_s:].sum()
    return float((r_d - n_d * (n_d + 1) / 2.0) / (n_s * n_d))


def pair_auc(features: np.ndarray, labels: np.ndarray, rng: np.random.Generator, n: int = 600):
    """AUC of L2 distances between ``n`` random labelled pixels (features H×W×C)."""
    return pair_aucs([features], labels, rng, n)[0]


def pair_aucs(
    arrays: list[np.ndarray], labels: np.ndarray, rng: np.random.Generator, n: int = 600
) -> list[float | None]:
    """:func:`pair_auc` of several H×W×C arrays on the same ``n`` random labelled pixels."""
    flat_l = labels.reshape(-1)
    valid = np.flatnonzero(flat_l > 0)
    idx = rng.choice(valid, size=min(n, valid.size), replace=False)
    lab = flat_l[idx]
    iu = np.triu_indices(idx.size, 1)
    same = (lab[:, None] == lab[None, :])[iu]
    if same.all() or not same.any():
        return [None] * len(arrays)
    out: list[float | None] = []
    for features in arrays:
        f = features.reshape(-1, features.shape[-1])[idx].astype(np.float64)
        sq = (f * f).sum(1)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0))[iu]
        out.append(ranking_auc(dist[same], dist[~same]))
    return out


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns labels."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=p)])
    c = np.asarray(centres)
    labels = np.zeros(len(x), np.int64)
    for _ in range(iters):
        labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return labels


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Hubert & Arabie's adjusted Rand index of two labelings."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), np.int64)
    np.add.at(table, (ai, bi), 1)

    def comb2(v):
        return (v * (v - 1) / 2.0).sum()

    sum_ij = comb2(table)
    sum_a = comb2(table.sum(1))
    sum_b = comb2(table.sum(0))
    expected = sum_a * sum_b / comb2(np.array([len(a)]))
    maximum = 0.5 * (sum_a + sum_b)
    if maximum == expected:
        return 1.0
    return float((sum_ij - expected) / (maximum - expected))


@dataclass
class EvalReport:
    images: int
    pair_auc: float
    ari: float
    rgb_pair_auc: float  # the same pixel pairs with raw RGB as features: a floor to beat
    size: tuple[int, int]
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    extractor: Any,
    scenes: Any,
    count: int,
    seed: int = 0,
    pixels: int = 600,
    cluster_pixels: int = 4000,
) -> EvalReport:
    """Score ``count`` scenes ``(image, instances)`` with an :class:`~sss_rt.Extractor`."""
    rng = np.random.default_rng(seed)
    aucs, rgb_aucs, aris = [], [], []
    size = None
    for i in range(count):
        image, labels = scenes[i]
        size = image.shape[:2]
        result = extractor.extract(image, return_features=True)
        auc, rgb_auc = pair_aucs([result.features, image.astype(np.float64)], labels, rng, pixels)
        if auc is not None:
            aucs.append(auc)
            rgb_aucs.append(rgb_auc)
        flat = labels.reshape(-1)
        valid = np.flatnonzero(flat > 0)
        pick = rng.choice(valid, size=min(cluster_pixels, valid.size), replace=False)
        emb = result.embedding.reshape(-1, result.embedding.shape[-1])[pick].astype(np.float64)
        k = np.unique(flat[pick]).size
        aris.append(adjusted_rand_index(flat[pick], kmeans(emb, k, rng)))
    return EvalReport(
        images=count,
        pair_auc=float(np.mean(aucs)),
        ari=float(np.mean(aris)),
        rgb_pair_auc=float(np.mean(rgb_aucs)),
        size=tuple(size),
        seed=seed,
    )
