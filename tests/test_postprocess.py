"""CPU post-processing against independent float64 NumPy references (tests/reference_impl.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import structured_scene
from reference_impl import (
    color_guided_filter,
    pca_reference,
    postprocess_reference,
    window_mean_integral,
    window_mean_naive,
)

from sss_rt.postprocess import postprocess
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.guide import filter_channels
from sss_rt.postprocess.guided_filter import box_sum
from sss_rt.postprocess.moments import fit_basis
from sss_rt.postprocess.pca import flip_signs, normalize_unit, serial_blas

TOL = 1e-4  # max abs error allowed against the float64 references


@pytest.mark.parametrize("radius", [0, 1, 3, 7])
def test_box_mean_truncated_border(rng, radius):
    x = rng.normal(size=(13, 17, 2)).astype(np.float32)
    count = box_sum(np.ones((13, 17), np.float32), radius)
    got = box_sum(x, radius) / count[..., None]
    np.testing.assert_allclose(got, window_mean_naive(x.astype(np.float64), radius), atol=1e-5)


def test_integral_reference_agrees_with_loops(rng):
    x = rng.normal(size=(11, 9))
    np.testing.assert_allclose(window_mean_integral(x, 2), window_mean_naive(x, 2), atol=1e-12)


@pytest.mark.parametrize("radius,eps", [(1, 1e-3), (2, 1e-2), (5, 1e-1)])
def test_guided_filter_matches_naive_reference(rng, radius, eps):
    image = rng.integers(0, 256, (19, 23, 3), dtype=np.uint8)
    feats = rng.normal(size=(5, 19, 23)).astype(np.float32)
    got = filter_channels(feats, image, PostprocessConfig(radius=radius, eps=eps, chunk=2))
    for c in range(5):
        ref = color_guided_filter(image / 255.0, feats[c], radius, eps, mean=window_mean_naive)
        assert np.abs(got[..., c] - ref).max() <= TOL


def test_guided_filter_preserves_constants_and_is_linear(rng):
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    const = np.full((1, 30, 40), 2.5, np.float32)
    cfg = PostprocessConfig(radius=3)
    np.testing.assert_allclose(filter_channels(const, image, cfg)[..., 0], 2.5, atol=1e-5)
    a, b = rng.normal(size=(2, 1, 30, 40)).astype(np.float32)
    lhs = filter_channels(2 * a - 3 * b, image, cfg)
    rhs = 2 * filter_channels(a, image, cfg) - 3 * filter_channels(b, image, cfg)
    np.testing.assert_allclose(lhs, rhs, atol=1e-4)


def test_edge_preserving_behaviour():
    """A feature step that follows an image edge survives filtering."""
    image = np.zeros((20, 20, 3), np.uint8)
    image[:, 10:] = 255
    feats = np.zeros((1, 20, 20), np.float32)
    feats[0, :, 10:] = 1.0
    out = filter_channels(feats, image, PostprocessConfig(radius=4, eps=1e-4))[..., 0]
    assert out[:, :9].max() < 0.02 and out[:, 11:].min() > 0.98


def test_pca_basis_matches_svd_reference(rng):
    x = (rng.normal(size=(5000, 16)) * np.linspace(4, 0.1, 16) + 7.0).astype(np.float32)
    basis = fit_basis(x, 3)
    comps, _ = pca_reference(x, 3)
    np.testing.assert_allclose(basis.components, comps, atol=1e-4)
    np.testing.assert_allclose(basis.mean, x.astype(np.float64).mean(0), atol=1e-5)


def test_sign_rule_largest_loading_positive():
    comps = np.array([[0.1, -0.9, 0.2], [0.5, 0.4, 0.3], [-0.2, 0.1, 0.0]])
    flipped = flip_signs(comps)
    assert [row[np.argmax(np.abs(row))] > 0 for row in flipped] == [True, True, True]
    np.testing.assert_array_equal(flipped[1], comps[1])
    np.testing.assert_array_equal(flipped[0], -comps[0])


def test_normalization_range_and_constant_column():
    y = np.array([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]])
    out = normalize_unit(y)
    np.testing.assert_allclose(out[:, 0], [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(out[:, 1], 0.0)
    assert out.dtype == np.float32


@pytest.mark.parametrize("seed,size", [(0, (48, 64)), (1, (61, 37))])
def test_postprocess_matches_reference_structured(seed, size):
    image, feats = structured_scene(*size, seed=seed)
    feats = feats[:32]
    cfg = PostprocessConfig(radius=4, eps=1e-2)
    got, basis = postprocess(feats, image, cfg)
    ref, _ = postprocess_reference(feats, image, 4, 1e-2)
    assert got.shape == (*size, 3) and got.dtype == np.float32
    assert got.min() == 0.0 and got.max() == 1.0
    ev = basis.eigenvalues  # no two kept eigenvalues nearly tied (the comparison is stable)
    assert not np.any(np.abs(np.diff(ev)) <= 1e-3 * abs(float(ev[0])))
    assert np.abs(got - ref).max() <= TOL


def test_postprocess_matches_reference_random(rng):
    image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    # random features with a dominant, well-separated spectrum
    feats = (rng.normal(size=(24, 40, 50)) * np.linspace(5, 0.2, 24)[:, None, None]).astype(
        np.float32
    )
    got, _ = postprocess(feats, image, PostprocessConfig(radius=2))
    ref, _ = postprocess_reference(feats, image, 2, 1e-2)
    assert np.abs(got - ref).max() <= TOL


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("mode", ["exact", "fast", "matlab"])
@pytest.mark.parametrize("engine", ["auto", "numpy"])
@pytest.mark.parametrize("where", [(2, 3, 3), (0, 0, 0), (3, 9, 12)])
def test_postprocess_rejects_non_finite_features(rng, bad, mode, engine, where):
    """One bad value anywhere (corners included) is reported, in every mode and engine."""
    image = rng.integers(0, 256, (10, 13, 3), dtype=np.uint8)
    feats = rng.normal(size=(4, 10, 13)).astype(np.float32)
    feats[where] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        postprocess(feats, image, PostprocessConfig(mode=mode, engine=engine))


def test_postprocess_rejects_mismatched_shapes(rng):
    with pytest.raises(ValueError):
        postprocess(np.zeros((4, 10, 10), np.float32), np.zeros((10, 11, 3), np.uint8))


def test_serial_blas_limits_blas_threads_and_restores_them():
    from sss_rt import blas

    before = blas.thread_counts()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with serial_blas():
        assert blas.thread_counts() == [1] * len(before)
    assert blas.thread_counts() == before
