"""Property-based tests of the CPU post-processing (shapes, dtypes, ranges, degenerate input)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sss_rt.postprocess import postprocess
from sss_rt.postprocess.config import PostprocessConfig

sizes = st.tuples(st.integers(1, 24), st.integers(1, 24))


@settings(max_examples=40, deadline=None)
@given(size=sizes, channels=st.integers(3, 12), radius=st.integers(0, 6), seed=st.integers(0, 99))
def test_output_shape_dtype_and_range(size, channels, radius, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    feats = (rng.normal(size=(channels, *size)) * rng.uniform(0.01, 100)).astype(np.float32)
    emb, basis = postprocess(feats, image, PostprocessConfig(radius=radius, chunk=5))
    assert emb.shape == (*size, 3) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    assert emb.min() >= 0.0 and emb.max() <= 1.0
    norms = np.linalg.norm(basis.components, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(size=sizes, value=st.floats(-50, 50), gray=st.integers(0, 255))
def test_constant_features_and_image_give_zeros(size, value, gray):
    image = np.full((*size, 3), gray, np.uint8)
    feats = np.full((6, *size), value, np.float32)
    emb, _ = postprocess(feats, image)
    np.testing.assert_array_equal(emb, 0.0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 999))
def test_result_independent_of_chunking(seed):
    """The NumPy engine's channel chunks (``chunk``: the only engine that reads it)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (17, 21, 3), dtype=np.uint8)
    feats = (rng.normal(size=(10, 17, 21)) * np.linspace(4, 0.5, 10)[:, None, None]).astype(
        np.float32
    )
    a, _ = postprocess(feats, image, PostprocessConfig(chunk=1, engine="numpy"))
    b, _ = postprocess(feats, image, PostprocessConfig(chunk=10, engine="numpy"))
    np.testing.assert_allclose(a, b, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 999), height=st.integers(40, 90))
def test_result_independent_of_band_size(seed, height):
    """Features in memory, filtered band after band against the whole image's guide tables:
    1 MB bands (a few rows each here) give the one-band result."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, 64, 3), dtype=np.uint8)
    feats = (rng.normal(size=(128, height, 64)) * np.linspace(4, 0.5, 128)[:, None, None]).astype(
        np.float32
    )
    a, _ = postprocess(feats, image, PostprocessConfig(band_mb=1))
    b, _ = postprocess(feats, image, PostprocessConfig(band_mb=64))
    np.testing.assert_allclose(a, b, atol=1e-5)
