"""Evaluation metrics against direct definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sss_rt.training.evaluate import adjusted_rand_index, kmeans, ranking_auc


def test_auc_equals_pair_counting(rng):
    same = rng.normal(0, 1, 40).round(1)
    diff = rng.normal(1, 1, 50).round(1)
    wins = sum(1.0 if d > s else 0.5 if d == s else 0.0 for s, d in itertools.product(same, diff))
    assert ranking_auc(same, diff) == pytest.approx(wins / (40 * 50), abs=1e-12)
    assert ranking_auc(np.zeros(3), np.ones(3)) == 1.0
    assert ranking_auc(np.ones(3), np.zeros(3)) == 0.0


def test_ari_definition():
    a = np.array([0, 0, 0, 1, 1, 1])
    assert adjusted_rand_index(a, a) == 1.0
    assert adjusted_rand_index(a, 5 - a) == 1.0  # label names do not matter
    # value from the pair-counting definition (Hubert & Arabie): n=6
    b = np.array([0, 0, 1, 1, 2, 2])
    # contingency [[2,1,0],[0,1,2]]: Σcomb=2, a-sums 3,3 → 6, b-sums 2,2,2 → 3, total 15
    expected = (2 - 6 * 3 / 15) / (0.5 * (6 + 3) - 6 * 3 / 15)
    assert adjusted_rand_index(a, b) == pytest.approx(expected)


def test_kmeans_recovers_separated_clusters(rng):
    centres = np.array([[0, 0, 0], [5, 5, 5], [0, 5, 0]], float)
    truth = rng.integers(0, 3, 300)
    x = centres[truth] + rng.normal(0, 0.2, (300, 3))
    assert adjusted_rand_index(truth, kmeans(x, 3, rng)) == pytest.approx(1.0)


def test_pair_aucs_share_pixels_and_match_single_auc():
    from sss_rt.training.evaluate import pair_auc, pair_aucs

    labels = np.repeat(np.array([[1, 2], [3, 1]]), 8, axis=0).repeat(8, axis=1)  # 16×16
    rng = np.random.default_rng(0)
    perfect = np.eye(4)[labels][..., 1:]  # one-hot of the instance: same → 0, different → √2
    noise = rng.normal(size=(16, 16, 3))
    a, b = pair_aucs([perfect, noise], labels, np.random.default_rng(1), 60)
    assert a == 1.0 and 0.3 < b < 0.7
    assert pair_auc(noise, labels, np.random.default_rng(1), 60) == b
    assert pair_aucs([noise], np.ones((4, 4), int), rng, 10) == [None]
