"""Semantic Soft Segmentation: each stage against an independent reference on small images, the
layers' invariants, and instance recovery on held-out synthetic scenes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
from reference_impl import matting_affinity_exact, matting_laplacian_reference
from scipy.special import erf

from sss_rt.segmentation import (
    SegmentConfig,
    affinity,
    eigen,
    native,
    pardiso,
    sparsify,
    superpixels,
)
from sss_rt.segmentation.gradient import gradient_magnitude
from sss_rt.segmentation.segmenter import SegmentWork, _initial_segments, segment_arrays


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3))
    img[:, : w // 2] = [0.8, 0.2, 0.1]
    img[:, w // 2 :] = [0.1, 0.3, 0.9]
    return np.clip(img + 0.05 * rng.standard_normal((h, w, 3)), 0, 1)


_MATTING_PATHS = [
    pytest.param(
        True, id="compiled", marks=pytest.mark.skipif(not native.available(), reason="no C kernel")
    ),
    pytest.param(False, id="numpy"),
]


@pytest.mark.parametrize("compiled", _MATTING_PATHS)
@pytest.mark.parametrize("shape", [(6, 7), (3, 3), (3, 4), (4, 3), (5, 12), (12, 4), (9, 5)])
def test_matting_laplacian_matches_the_per_window_construction(shape, compiled):
    """Images narrower than a row of offsets (< 5) included: their rows' columns are sorted."""
    img = _image(*shape, seed=1)
    w = affinity.matting_affinity(img, compiled=compiled)
    got = affinity.laplacian(w).toarray()
    ref = matting_laplacian_reference(img)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert np.abs(got - got.T).max() == 0  # symmetric
    assert np.abs(got.sum(axis=1)).max() < 1e-9  # rows sum to zero
    assert w.has_canonical_format and w.indices.dtype == np.int32


@pytest.mark.parametrize("compiled", _MATTING_PATHS)
def test_matting_affinity_stays_accurate_where_a_window_has_one_colour_line(compiled):
    """Colours k·(1, 2, 3)/255: every window's covariance has rank ≤ 1, so Σ + ε/9·I has two
    eigenvalues ε/9 against ~0.01–0.1 (condition ~1e7). Against exact rational arithmetic on the
    same inputs: a cofactor inverse of the 3×3 (tried) was off by 5.5e-4 here, 3e-3 on the
    example photo; the compiled Cholesky path is within 3e-16, NumPy's LU within 2e-10."""
    k = np.random.default_rng(3).integers(0, 86, (5, 6))
    img = np.stack([k, 2 * k, 3 * k], axis=-1) / 255.0
    exact = matting_affinity_exact(img)
    got = affinity.matting_affinity(img, compiled=compiled).toarray()
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-8 * np.abs(exact).max())


@pytest.mark.skipif(not native.available(), reason="no C kernel")
def test_compiled_matting_affinity_agrees_with_numpy_and_ignores_the_thread_count():
    img = _image(37, 53, seed=4)
    img[10:20, 5:30] = 0.5  # flat windows: Σ = 0
    ref = affinity.matting_affinity(img, compiled=False)
    one = native.matting_affinity(img, affinity.MATTING_EPS, threads=1)
    many = native.matting_affinity(img, affinity.MATTING_EPS, threads=5)
    for a in (one, many):
        assert a.has_canonical_format and (a != a.T).nnz == 0  # exactly symmetric
    np.testing.assert_array_equal(one.indptr, many.indptr)
    np.testing.assert_array_equal(one.indices, many.indices)
    np.testing.assert_array_equal(one.data, many.data)  # the same bits on any thread count
    np.testing.assert_allclose(one.toarray(), ref.toarray(), rtol=0, atol=1e-9 * abs(ref).max())


def test_superpixel_affinities_follow_their_formulas():
    img = _image(40, 48)
    feat = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    labels = superpixels.slic_zero(img, 30)
    s = superpixels.describe(labels, img, feat)
    n = img.shape[0] * img.shape[1]
    assert s.count == labels.max() + 1 and len(s.adjacent) > 0
    # adjacency: every pair really touches in the 8-neighbourhood
    i, j = s.adjacent[0]
    yi, xi = np.nonzero(labels == i)
    yj, xj = np.nonzero(labels == j)
    dist = np.maximum(np.abs(yi[:, None] - yj[None]), np.abs(xi[:, None] - xj[None]))
    assert dist.min() == 1
    sem = affinity.semantic_affinity(s, n)
    a, b = s.centroid_pixel[i], s.centroid_pixel[j]
    d = np.linalg.norm(s.mean_feature[i] - s.mean_feature[j])
    assert sem[a, b] == pytest.approx(erf(20 * (1 - d - 0.85))) and sem[a, b] == sem[b, a]
    # the colour affinity: test_superpixel_affinities_are_the_authors


def _authors_superpixel_affinities(labels, image, features):
    """Superpixels.m's neighborAffinities + nearbyAffinities transcribed, loop by loop, on given
    labels: regionprops centroids (1-based), MATLAB round (half away from zero), sub2ind; the
    8-connected neighbours; erf affinities of region means; W' + W. Dense N×N (small images)."""
    from math import erf as erf1

    h, w = labels.shape
    n_sp = labels.max() + 1
    cents = []
    for k in range(n_sp):
        ys, xs = np.nonzero(labels == k)
        cy, cx = ys.mean() + 1, xs.mean() + 1
        ry, rx = int(np.floor(cy + 0.5)), int(np.floor(cx + 0.5))
        cents.append((ry, rx, (rx - 1) * h + ry - 1))  # sub2ind, column-major, made 0-based
    # MATLAB's linear indices are column-major; map them to this project's row-major pixels
    to_rm = [(ind % h) * w + ind // h for _, _, ind in cents]
    means = lambda v: np.array([v[labels == k].mean(axis=0) for k in range(n_sp)])  # noqa: E731
    fm, cm = means(features), means(image)
    neigh = set()
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for y in range(h - dy):
            for x in range(max(0, -dx), min(w, w - dx)):
                a, b = labels[y, x], labels[y + dy, x + dx]
                if a != b:
                    neigh.add((min(a, b), max(a, b)))
    n = h * w
    sem, col = np.zeros((n, n)), np.zeros((n, n))
    for a, b in sorted(neigh):
        d = np.sqrt(((fm[a] - fm[b]) ** 2).sum())
        sem[to_rm[a], to_rm[b]] += erf1(20 * ((1 - d) - 0.85))
    for i in range(n_sp):
        for j in range(i + 1, n_sp):
            dy = cents[i][0] / h - cents[j][0] / h
            dx = cents[i][1] / w - cents[j][1] / w
            if np.sqrt(dy * dy + dx * dx) <= 0.2:
                d = np.sqrt(((cm[i] - cm[j]) ** 2).sum())
                col[to_rm[i], to_rm[j]] += (erf1(50 * ((1 - d) - 0.95)) + 1) / 2
    sem, col = sem + sem.T, col + col.T
    np.fill_diagonal(sem, 0)  # a superpixel pair on one pixel: cancels in L = D − W
    np.fill_diagonal(col, 0)
    return sem, col


@pytest.mark.parametrize("seed", [0, 1])
def test_superpixel_affinities_are_the_authors(seed):
    img = _image(30, 41, seed=seed)
    feat = np.stack([img.mean(axis=2), img[..., 0] ** 2, 1 - img[..., 2]], axis=2)
    labels = superpixels.slic_zero(img, 40)
    s = superpixels.describe(labels, img, feat)
    want_sem, want_col = _authors_superpixel_affinities(labels, img, feat)
    n = img.shape[0] * img.shape[1]
    np.testing.assert_allclose(affinity.semantic_affinity(s, n).toarray(), want_sem, atol=1e-12)
    np.testing.assert_allclose(affinity.color_affinity(s, n).toarray(), want_col, atol=1e-12)


_FACTORIZATIONS = ["superlu"] + (["pardiso"] if pardiso.available() else [])
needs_mkl = pytest.mark.skipif(not pardiso.available(), reason="MKL (pip install mkl) absent")


@pytest.mark.parametrize("backend", _FACTORIZATIONS)
def test_eigenvectors_span_the_dense_decomposition(backend):
    img = _image(18, 20, seed=2)
    feat = img.copy()
    s = superpixels.describe(superpixels.slic_zero(img, 20), img, feat)
    lap = affinity.segmentation_laplacian(img, s)
    dense_vals, dense_vecs = scipy.linalg.eigh(lap.toarray())
    order = np.argsort(np.abs(dense_vals))
    mags = np.abs(dense_vals[order])
    k = 8 + int(np.argmax(mags[8:30] / mags[7:29]))  # at the widest relative gap
    assert mags[k] > 1.02 * mags[k - 1]
    for shape in (None, img.shape[:2]):  # SuperLU's ordering, and the grid's dissection
        vals, vecs = eigen.smallest_eigenvectors(lap, k, shape=shape, backends=(backend,))
        np.testing.assert_allclose(np.sort(vals), np.sort(dense_vals[order[:k]]), atol=1e-8)
        angles = scipy.linalg.subspace_angles(vecs, dense_vecs[:, order[:k]])
        assert angles.max() < 1e-5
        assert np.abs(vecs.T @ vecs - np.eye(k)).max() < 1e-8


def test_block_krylov_keeps_its_basis_orthogonal_on_a_one_object_photo():
    """The photo whose spectrum undid a single reorthogonalization pass: the Krylov basis stays
    orthonormal, so the block method converges by itself (480 solves measured; a single full
    pass lost orthogonality and fell back to ARPACK at 1,088) to orthonormal eigenvectors
    within the tolerance."""
    photo = np.full((120, 160, 3), 200 / 255)
    photo[50:65, 70:85] = np.array([20, 40, 220]) / 255
    emb = np.full((120, 160, 3), 0.3)
    emb[50:65, 70:85] = (0.9, 0.1, 0.5)
    s = superpixels.describe(superpixels.slic_zero(photo, 2500), photo, emb)
    lap = affinity.segmentation_laplacian(photo, s)
    stats = eigen.EigenStats()
    vals, vecs = eigen.smallest_eigenvectors(lap, 100, stats=stats, shape=(120, 160))
    assert stats.solves <= 6 * 100  # the block method's (ARPACK takes over at 8k vectors)
    assert np.abs(vecs.T @ vecs - np.eye(100)).max() < 1e-12
    norm = float(abs(lap).sum(axis=1).max())
    assert np.linalg.norm(lap @ vecs - vecs * vals, axis=0).max() <= eigen.TOL * norm


@pytest.mark.parametrize("n, d, k", [(2000, 3, 40), (300, 5, 7), (50, 2, 1)])
def test_kmeans_plus_plus_draws_scipys_centres(n, d, k):
    """The running-minimum k-means++ starts from the very centres SciPy's kmeans2 "++" draws
    with the same seed, so k-means ends with the same labels."""
    from scipy.cluster.vq import kmeans2

    from sss_rt.segmentation.segmenter import _kmeans_plus_plus

    data = np.random.default_rng(n).random((n, d))
    data[: n // 4] = data[0]  # repeated points: distance 0, never drawn again
    for seed in (0, 7):
        start = _kmeans_plus_plus(data, k, seed)
        assert len(np.unique(start, axis=0)) == k
        centres, labels = kmeans2(data, k, minit="++", seed=seed)
        ours, our_labels = kmeans2(data, start, minit="matrix")
        np.testing.assert_array_equal(ours, centres)
        np.testing.assert_array_equal(our_labels, labels)


def test_dissection_order_is_a_permutation_with_distant_pixels_last():
    img = _image(30, 41, seed=6)
    s = superpixels.describe(superpixels.slic_zero(img, 25), img, img)
    lap = affinity.segmentation_laplacian(img, s)
    perm = eigen.dissection_order(lap, (30, 41))
    assert np.array_equal(np.sort(perm), np.arange(30 * 41))
    tail = set(perm[-len(np.unique(s.centroid_pixel)) :].tolist())
    assert set(np.unique(s.centroid_pixel).tolist()) <= tail  # centroids come last


def _small_problem(seed=3, h=24, w=28):
    img = _image(h, w, seed)
    feat = np.concatenate([img[..., :2], img.mean(axis=2, keepdims=True)], axis=2)
    s = superpixels.describe(superpixels.slic_zero(img, 40), img, feat)
    lap = affinity.segmentation_laplacian(img, s)
    vals, vecs = eigen.smallest_eigenvectors(lap, 20)
    return img, feat, lap, vals, vecs


def test_constrained_sparsification_energy_never_increases():
    _, feat, lap, vals, vecs = _small_problem()
    init = _initial_segments(feat.reshape(-1, 3), 8, 0)
    trace = sparsify.SparsifyTrace()
    alpha = sparsify.constrained_sparsification(vecs, vals, lap, init, 30, trace=trace)
    e = np.array(trace.energies)
    same = np.diff(trace.segments) == 0  # energies compare only without a drop in between
    rises = (np.diff(e) > 1e-6 * np.abs(e[1:]))[same]
    assert not rises.any(), e
    assert e[-1] <= e[0]
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, atol=1e-9)  # the sum constraint holds


def test_constrained_sparsification_drops_on_the_authors_schedule():
    """softSegmentsFromEigs.m drops near-empty segments after iterations ⌈T/4⌉ + 1, 2⌈T/4⌉ + 1,
    … (11, 21, 31 of 40), never at the last one."""
    _, feat, lap, vals, vecs = _small_problem()
    init = _initial_segments(feat.reshape(-1, 3), 12, 0)
    for iterations in (40, 20):
        trace = sparsify.SparsifyTrace()
        sparsify.constrained_sparsification(vecs, vals, lap, init, iterations, trace=trace)
        counts = trace.segments  # the segments each iteration started its solve with
        dropped = [it for it in range(1, iterations) if counts[it] != counts[it - 1]]
        cycle = -(-iterations // 4)
        assert dropped, counts
        assert set(dropped) <= set(range(cycle + 1, iterations, cycle)), (iterations, dropped)


def test_grouping_weights_features_by_alpha_as_the_authors():
    """groupSegments.m: each segment's mean feature is sum(α .* f) / sum(α), negative α
    included (constrained segments reach −0.8)."""
    rng = np.random.default_rng(5)
    feat = rng.random((500, 3))
    alpha = rng.random((500, 6)) - 0.3
    want = np.stack([(alpha[:, [k]] * feat).sum(axis=0) / alpha[:, k].sum() for k in range(6)])
    np.testing.assert_allclose(sparsify.segment_means(alpha, feat), want, rtol=1e-12)


def test_relaxed_sparsification_gives_layers_in_0_1_summing_to_1():
    img, feat, lap, vals, vecs = _small_problem(seed=4)
    init = _initial_segments(feat.reshape(-1, 3), 8, 0)
    alpha = sparsify.constrained_sparsification(vecs, vals, lap, init, 20)
    grouped = sparsify.group_segments(alpha, feat.reshape(-1, 3), 3)
    assert grouped.shape[1] == 3
    np.testing.assert_allclose(grouped.sum(axis=1), alpha.sum(axis=1), atol=1e-9)
    energies: list[float] = []
    exponent = 0.9 + np.minimum(gradient_magnitude(img), 0.1).ravel()
    out = sparsify.relaxed_sparsification(grouped, lap, exponent, 10, energies=energies)
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-3)
    e = np.array(energies)  # the start's, then each iterate's
    assert e[-1] < e[0] - 1e-6 * abs(e[0]), e  # it moves: the CG steps are taken
    assert (np.diff(e) <= 1e-9 * np.abs(e[1:])).all(), e  # and never rises (IRLS majorizes)


def test_relaxed_sparsification_depends_on_its_exponent_and_iterations():
    """The sparsity term and the per-pixel exponent reach the output (a relaxed step whose CG
    stopped before its first step once gave the same layers for any exponent and for zero
    iterations)."""
    img, feat, lap, vals, vecs = _small_problem(seed=4)
    init = _initial_segments(feat.reshape(-1, 3), 8, 0)
    alpha = sparsify.constrained_sparsification(vecs, vals, lap, init, 20)
    grouped = sparsify.group_segments(alpha, feat.reshape(-1, 3), 3)
    exponent = 0.9 + np.minimum(gradient_magnitude(img), 0.1).ravel()
    out = sparsify.relaxed_sparsification(grouped, lap, exponent, 10)
    constant = sparsify.relaxed_sparsification(grouped, lap, np.full_like(exponent, 0.9), 10)
    none = sparsify.relaxed_sparsification(grouped, lap, exponent, 0)
    assert np.abs(out - constant).max() > 1e-4
    assert np.abs(out - none).max() > 1e-3


def _authors_gradient(image: np.ndarray) -> np.ndarray:
    """imageGradient(image, false, 6) transcribed: the published 13-tap filters as written
    there, 13 replicated pixels of padding, MATLAB's conv2(u, v, A, 'same') — u down the
    columns, v along the rows, true convolution — per channel, then the norms."""
    dk = [0.0001, 0.0019, 0.0142, 0.0509, 0.0963, 0.0878, 0.0000, -0.0878, -0.0963, -0.0509,
          -0.0142, -0.0019, -0.0001]  # fmt: skip
    kk = [0.0000, 0.0007, 0.0071, 0.0374, 0.1126, 0.2119, 0.2605, 0.2119, 0.1126, 0.0374,
          0.0071, 0.0007, 0.0000]  # fmt: skip
    padded = np.pad(image, ((13, 13), (13, 13), (0, 0)), mode="edge")

    def conv2(u, v, a):
        cols = np.apply_along_axis(lambda c: np.convolve(c, u, mode="same"), 0, a)
        return np.apply_along_axis(lambda r: np.convolve(r, v, mode="same"), 1, cols)

    ys = np.stack([conv2(dk, kk, padded[..., c]) for c in range(3)], axis=2)[13:-13, 13:-13]
    xs = np.stack([conv2(kk, dk, padded[..., c]) for c in range(3)], axis=2)[13:-13, 13:-13]
    y, x = np.sqrt((ys**2).sum(axis=2)), np.sqrt((xs**2).sum(axis=2))
    return np.sqrt(y * y + x * x)


def test_gradient_is_the_authors_colour_gradient():
    image = _image(37, 52, seed=4)
    np.testing.assert_allclose(gradient_magnitude(image), _authors_gradient(image), atol=1e-12)
    ramp = np.tile(0.02 * np.arange(50.0), (30, 1))
    g = gradient_magnitude(np.repeat(ramp[..., None], 3, axis=2))
    # the derivative is 1 on a unit ramp (to the published taps' four decimals); the three
    # channels add in the norm
    np.testing.assert_allclose(g[:, 8:-8], 0.02 * np.sqrt(3), rtol=2e-4)


def test_segment_arrays_on_a_two_region_image():
    img = (_image(40, 60, seed=5) * 255).astype(np.uint8)
    feat = np.zeros((40, 60, 3), np.float32)
    feat[:, 30:] = 1.0
    cfg = SegmentConfig(scale=1.0, superpixels=60, eigenvectors=20, initial_segments=8,
                        iterations=20, layers=2, relaxed_iterations=5)  # fmt: skip
    timings: dict[str, float] = {}
    work = SegmentWork()
    alphas = segment_arrays(img, feat, cfg, timings, work=work)
    assert alphas.shape == (40, 60, 2) and alphas.dtype == np.float32
    np.testing.assert_allclose(alphas.sum(axis=2), 1.0, atol=1e-3)
    left = alphas[:, :25].mean(axis=(0, 1))
    right = alphas[:, 35:].mean(axis=(0, 1))
    assert np.abs(left - right).max() > 0.8  # the two halves land in different layers
    assert set(timings) >= {"superpixels", "eigenvectors", "constrained_sparsification"}
    # what each stage did: the same layers as without the record
    assert work.shape == (40, 60) and work.laplacian_nnz > 40 * 60
    assert work.eigensolver.solves >= 20 and work.eigensolver.factor_nnz > 0
    assert work.eigenvectors == 20
    assert work.constrained.segments == [2] * 20  # k-means: two distinct feature values
    assert len(work.constrained.gram_pixels) == 20 and not work.constrained.energies
    assert len(work.cg_steps) == 6 and work.layers == 2  # 5 IRLS solves and the final one
    np.testing.assert_array_equal(segment_arrays(img, feat, cfg), alphas)


# --- the command line and the one-call API -------------------------------------------------

FAST = dict(superpixels=80, eigenvectors=24, initial_segments=10, iterations=12, layers=3,
            relaxed_iterations=4)  # fmt: skip


def _photo(tmp_path, name="p.png", h=48, w=64):
    import cv2

    from sss_rt.extractor import examples_dir
    from sss_rt.io.images import load_image

    img = cv2.resize(load_image(sorted(examples_dir().glob("*.jpg"))[0]), (w, h))
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path, img


def test_soft_segmenter_and_segment_api(tmp_path):
    from sss_rt import SegmentConfig, SoftSegmenter, segment

    path, img = _photo(tmp_path)
    cfg = SegmentConfig(scale=1.0, **FAST)
    with SoftSegmenter(config=cfg, device="cpu") as seg:
        a = seg.segment(path)
        b = seg.segment(img, a.embedding)  # the same features given: the same layers
    assert a.alphas.shape == (48, 64, 3) and a.count == 3
    np.testing.assert_allclose(a.alphas.sum(axis=2), 1.0, atol=1e-3)
    assert a.alphas.min() >= 0 and a.alphas.max() <= 1
    np.testing.assert_array_equal(a.alphas, b.alphas)
    assert "embedding" in a.timings and "embedding" not in b.timings
    c = segment(img, a.embedding, cfg)
    np.testing.assert_array_equal(c.alphas, a.alphas)
    with pytest.raises(ValueError, match="does not match"):
        segment(img, a.embedding[:10], cfg)


@pytest.mark.parametrize(("h", "w"), [(480, 640), (3000, 4000), (1000, 1001), (50, 20000)])
def test_working_size_never_exceeds_max_pixels(h, w):
    cfg = SegmentConfig()
    sh, sw = cfg.working_shape(h, w)
    assert sh * sw <= cfg.max_pixels
    if h * w * cfg.scale**2 <= cfg.max_pixels:  # small enough: the scale as given
        assert (sh, sw) == (round(h * cfg.scale), round(w * cfg.scale))
    else:  # the aspect ratio kept, within a pixel's rounding
        assert sh * sw > 0.95 * cfg.max_pixels and abs(sh / sw - h / w) < 2 * h / w / min(sh, sw)
    assert SegmentConfig(max_pixels=0).working_shape(h, w) == (round(h / 2), round(w / 2))
    with pytest.raises(ValueError, match="max_pixels"):
        SegmentConfig(max_pixels=4)


def test_a_large_photo_is_segmented_at_max_pixels_and_written_at_its_size(tmp_path):
    from sss_rt import SoftSegmenter

    path, _ = _photo(tmp_path)
    cfg = SegmentConfig(scale=1.0, max_pixels=24 * 32, **FAST)
    with SoftSegmenter(config=cfg, device="cpu") as seg:
        out = seg.segment(path)
    assert out.working_shape == (24, 32) and out.alphas.shape == (48, 64, 3)
    np.testing.assert_allclose(out.alphas.sum(axis=2), 1.0, atol=1e-3)
    assert out.embedding.shape == (48, 64, 3)  # up to 4× the working size: the photo's


def test_a_photo_far_over_the_working_size_gets_features_at_twice_it(tmp_path):
    """Features at 2× the working size (the network never runs at the photo's 12 MP), layers
    at the photo's size; features given at either size are accepted."""
    from sss_rt import SoftSegmenter

    path, image = _photo(tmp_path, h=97, w=130)
    cfg = SegmentConfig(scale=1.0, max_pixels=24 * 32, **FAST)
    assert cfg.feature_shape(97, 130) == (2 * 24, 2 * 32)
    assert cfg.feature_shape(48, 64) == (48, 64) and cfg.feature_shape(5, 400) == (5, 400)
    with SoftSegmenter(config=cfg, device="cpu") as seg:
        out = seg.segment(path)
        assert out.working_shape == (24, 32) and out.alphas.shape == (97, 130, 3)
        assert out.embedding.shape == (48, 64, 3)
        np.testing.assert_allclose(out.alphas.sum(axis=2), 1.0, atol=1e-3)
        again = seg.segment(image, out.embedding)
        np.testing.assert_array_equal(again.alphas, out.alphas)
        full = np.random.default_rng(0).random((97, 130, 3)).astype(np.float32)
        assert seg.segment(image, full).alphas.shape == (97, 130, 3)
        with pytest.raises(ValueError, match="does not match"):
            seg.segment(image, full[:60])


@pytest.mark.parametrize(("h", "w", "shape"), [(24, 32, (97, 130)), (30, 20, (30, 20)),
                                               (40, 50, (13, 200)), (1, 5, (3, 17))])  # fmt: skip
def test_enlarged_layers_are_opencvs_bilinear_clipped_and_renormalized(h, w, shape):
    """The banded enlargement = cv2.resize (INTER_LINEAR) of each layer, clipped to [0, 1] and
    renormalized, whole; any band height gives the same bits."""
    import cv2

    from sss_rt.segmentation.enlarge import enlarge_layers

    rng = np.random.default_rng(h * w)
    layers = rng.random((h, w, 4)) * 1.2 - 0.1
    layers /= layers.sum(axis=2, keepdims=True)
    small = layers.astype(np.float32)
    whole = np.stack([cv2.resize(small[..., k], shape[::-1], interpolation=cv2.INTER_LINEAR)
                      for k in range(4)], axis=2)  # fmt: skip
    whole = np.clip(whole, 0, 1)
    whole /= np.maximum(whole.sum(axis=2, keepdims=True), 1e-10)
    got = [enlarge_layers(layers, shape, band_rows=b) for b in (1, 7, 256)]
    for g in got:
        assert g.shape == (*shape, 4) and g.dtype == np.float32
        np.testing.assert_allclose(g, whole, rtol=0, atol=2e-6)
        np.testing.assert_array_equal(g, got[0])


def _cli(args):
    from sss_rt.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code or 0


CLI_FAST = ["--superpixels", "80", "--eigenvectors", "24", "--segments", "10",
            "--iterations", "12", "--layers", "3", "--relaxed-iterations", "4"]  # fmt: skip


def test_cli_segment_batch_rules(tmp_path, capsys):
    src = tmp_path / "in"
    _photo(src, "a.png")
    _photo(src, "sub/b.png", 40, 56)
    (src / "bad.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    code = _cli(["segment", str(src), "-o", str(out), "--layers-png", "--scale", "1", "-q",
                 "-d", "cpu", *CLI_FAST])  # fmt: skip
    assert code == 1  # one file failed, the others are done
    err = capsys.readouterr().err
    assert "bad.jpg" in err and "Traceback" not in err
    for stem, shape in (("a", (48, 64)), ("sub/b", (40, 56))):
        with np.load(out / f"{stem}.layers.npz") as z:
            assert z["alphas"].shape == (*shape, 3) and z["embedding"].shape == (*shape, 3)
            np.testing.assert_allclose(z["alphas"].sum(axis=2), 1.0, atol=1e-3)
        import cv2

        over = cv2.imread(str(out / f"{stem}.layers.png"))
        assert over.shape == (shape[0], 2 * shape[1], 3)
        rgba = cv2.imread(str(out / f"{stem}.layer-0.png"), cv2.IMREAD_UNCHANGED)
        assert rgba.shape == (*shape, 4)
    assert not list(out.rglob("*.part"))  # nothing half-written
    stamp = (out / "a.layers.npz").stat().st_mtime_ns
    (src / "bad.jpg").unlink()
    assert (
        _cli(["segment", str(src), "-o", str(out), "--layers-png", "--scale", "1", *CLI_FAST]) == 0
    )
    assert "2 skipped" in capsys.readouterr().err
    assert (out / "a.layers.npz").stat().st_mtime_ns == stamp


def test_cli_segment_reads_extracted_features(tmp_path):
    path, _img = _photo(tmp_path / "photos", "c.png")
    feats = tmp_path / "feats"
    assert _cli(["extract", str(path), "-o", str(feats), "-f", "sss", "-f", "npz", "-q"]) == 0
    out = tmp_path / "out"
    # the .sss.png holds photo and features; the .npz needs its photo (--photos)
    assert _cli(["segment", str(feats / "c.sss.png"), "-o", str(out / "s"), "-q", *CLI_FAST]) == 0
    assert _cli(["segment", str(feats / "c.npz"), "-o", str(out / "n"), "-q", *CLI_FAST]) == 1
    assert _cli(["segment", str(feats / "c.npz"), "-o", str(out / "n"), "-q", *CLI_FAST,
                 "--photos", str(tmp_path / "photos")]) == 0  # fmt: skip
    with np.load(out / "s" / "c.layers.npz") as a, np.load(out / "n" / "c.layers.npz") as b:
        assert a["alphas"].shape == b["alphas"].shape == (48, 64, 3)
        # the .sss.png stores the embedding in 8 bits: close to, not equal to, the npz's
        assert np.abs(a["embedding"] - b["embedding"]).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(("n", "m", "k"), [(500, 12, 5), (3001, 37, 3), (700, 16, 2), (97, 5, 4),
                                          (2000, 100, 3), (600, 8, 2), (900, 24, 3),
                                          (1500, 57, 2), (800, 104, 2)])  # fmt: skip
def test_grams_of_every_path_equal_the_float64_sums(n, m, k):
    """The compiled kernel (m = 8q + t: the triangle of 8q columns and the t rows whole, a
    pixel count that is no multiple of its panels, one and two threads, its AVX-512 and AVX2 tiles
    and its plain C loop), the pairs GEMM and the per-segment GEMM, each summing c directly and
    as base·EᵀE + Eᵀ diag(c − base) E, all against Σ_i c_ki e_i e_iᵀ in float64."""
    rng = np.random.default_rng(n + m)
    vecs = np.linalg.qr(rng.standard_normal((n, m)))[0]
    w = (rng.random((k, n)) * np.geomspace(1, 2.4e4, n)).astype(np.float32)  # the IRLS range
    base = np.float32(2.4e4)
    w[rng.random((k, n)) < 0.5] = base  # pixels at the weights' floor (most, in practice)
    w[0, : n // 3] = base  # a run of them longer than the kernel's panels
    e32 = vecs.astype(np.float32).astype(np.float64)
    exact = np.einsum("ki,ia,ib->kab", w.astype(np.float64), e32, e32)
    paths = [sparsify._Grams(vecs, compiled=False), sparsify._Grams(vecs, 0, compiled=False)]
    assert paths[0].pairs is not None and paths[1].pairs is None
    got = [p(w, b) for p in paths for b in (0.0, float(base))]
    if native.available():
        g = sparsify._Grams(vecs)
        assert g.padded is not None
        got += [g(w), g(w, float(base)), native.weighted_grams(g.padded, w, threads=1),
                native.weighted_grams(g.padded, w, level=1),
                native.weighted_grams(g.padded, w, level=0)]  # fmt: skip
    scale = np.abs(exact).max(axis=(1, 2), keepdims=True)
    for g in got:
        assert g.shape == (k, m, m)
        np.testing.assert_allclose(g / scale, exact / scale, rtol=0, atol=2e-6)
        np.testing.assert_array_equal(g, g.transpose(0, 2, 1))


def _symmetric_indefinite(n, seed):
    """A sparse symmetric matrix with eigenvalues of both signs (a grid Laplacian, shifted)."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n))
    grid = scipy.sparse.diags([1.0, 1.0, 1.0, 1.0], [-1, 1, -side, side], shape=(n, n))
    w = scipy.sparse.triu(grid, 1).multiply(rng.uniform(0.2, 1.0, n)[:, None]).tocsr()
    w = w + w.T
    lap = scipy.sparse.diags(np.asarray(w.sum(axis=1)).ravel()) - w
    return scipy.sparse.csr_matrix(lap - 0.3 * scipy.sparse.identity(n))


@pytest.mark.parametrize("r", [1, 3, 8, 16, 40])
def test_lu_solver_solves_like_a_dense_solve(r):
    """Both sweeps of the compiled solve (Uᵀ forward, Lᵀ backward on SuperLU's factors, with
    its row and column permutations and a symmetric reordering of ours), for one to 40
    right-hand sides (over 32: several calls), against numpy's dense solve."""
    from scipy.sparse.linalg import splu

    n = 400
    a = _symmetric_indefinite(n, r)
    rows = np.random.default_rng(r).permutation(n)
    lu = splu(scipy.sparse.csc_matrix(a[rows][:, rows]), permc_spec="MMD_AT_PLUS_A",
              diag_pivot_thresh=0.5)  # fmt: skip
    assert not np.array_equal(lu.perm_r, np.arange(n))  # pivoting happened
    b = np.random.default_rng(0).standard_normal((n, r) if r > 1 else n)
    exact = np.linalg.solve(a.toarray(), b)
    for compiled in (None, False):
        solver = native.LUSolver(lu, rows, compiled=compiled)
        assert solver.compiled == (compiled is None and native.available())
        x = solver.solve(b)
        assert x.shape == b.shape
        np.testing.assert_allclose(x, exact, rtol=0, atol=1e-9 * np.abs(exact).max())


@needs_mkl
@pytest.mark.parametrize("r", [1, 3, 16, 40])
@pytest.mark.parametrize("ordered", [True, False])
def test_pardiso_solves_like_a_dense_solve(r, ordered):
    """PARDISO's LDLᵀ of an indefinite matrix (its upper triangle read; a given order or
    METIS's), for one to 40 right-hand sides, against numpy's dense solve; its inertia is the
    dense eigenvalues' signs."""
    n = 400
    a = _symmetric_indefinite(n, r)
    rows = np.random.default_rng(r).permutation(n) if ordered else None
    solver = pardiso.PardisoSolver(a, rows)
    dense = a.toarray()
    eig = np.linalg.eigvalsh(dense)
    assert solver.inertia == ((eig > 0).sum(), (eig < 0).sum()) and solver.inertia[1] > 0
    assert solver.nnz >= (scipy.sparse.triu(a).nnz)  # at least the matrix's own triangle
    b = np.random.default_rng(0).standard_normal((n, r) if r > 1 else n)
    exact = np.linalg.solve(dense, b)
    x = solver.solve(b)
    assert x.shape == b.shape
    np.testing.assert_allclose(x, exact, rtol=0, atol=1e-9 * np.abs(exact).max())
    solver.close()
    with pytest.raises(ValueError, match="released"):
        solver.solve(b)


@needs_mkl
def test_pardiso_gives_the_same_bits_whatever_mkls_thread_count():
    """A solver made and used on any thread count gives the same bits (left to itself, PARDISO's
    factor rounds differently on 5+ threads, and a factor made on 5+ solves differently on as
    many; the layers must not depend on the machine). A grid large enough for PARDISO to split
    its elimination tree over threads; MKL's dynamic adjustment off, else it would cap the count
    at this machine's cores."""
    side = 160
    a = _symmetric_indefinite(side * side, 1)
    rows = eigen.dissection_order(a, (side, side))
    b = np.asfortranarray(np.random.default_rng(2).standard_normal((side * side, 16)))
    lib = pardiso._library()
    dynamic = lib.MKL_Get_Dynamic()
    lib.MKL_Set_Dynamic(0)
    try:
        solvers = [pardiso.PardisoSolver(a, rows, threads=t) for t in (1, 2, 8)]
        got = [solver.solve(b) for solver in solvers]
        for threads in (3, 8):  # one factor's solves on any count: the same bits too
            solvers[0].threads = threads
            got.append(solvers[0].solve(b))
    finally:
        lib.MKL_Set_Dynamic(dynamic)
    for x in got[1:]:
        assert np.array_equal(x, got[0])


@needs_mkl
def test_pardiso_calls_spin_briefly_and_restore_the_threads_setting(monkeypatch):
    """Every PARDISO call runs with MKL's OpenMP threads sleeping after BLOCKTIME ms (their
    default spin took a core from the products after each solve) and leaves the calling
    thread's own setting as it found it; the solves are unchanged."""
    import os
    import subprocess
    import sys

    a = _symmetric_indefinite(300, 2)
    b = np.random.default_rng(1).standard_normal((300, 4))
    plain = pardiso.PardisoSolver(a).solve(b)
    omp = pardiso._openmp()
    if omp is None and os.environ.get("SSS_RT_FRESH_PROCESS"):
        pytest.skip("MKL is not threading with Intel's OpenMP here")
    if omp is None:  # MKL took the GNU OpenMP another library loaded first (PyTorch's): again
        # in a process of its own, as sss-rt's pipeline runs without PyTorch
        name = "test_pardiso_calls_spin_briefly_and_restore_the_threads_setting"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{name}"],
            env={**os.environ, "SSS_RT_FRESH_PROCESS": "1"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout[-3000:]
        if "1 passed" not in done.stdout:
            pytest.skip("MKL is not threading with Intel's OpenMP here")
        return
    during: list[int] = []
    call = pardiso._pardiso

    def recording(*args, **kwargs):
        during.append(omp.kmp_get_blocktime())
        return call(*args, **kwargs)

    monkeypatch.setattr(pardiso, "_pardiso", recording)
    own = omp.kmp_get_blocktime()
    omp.kmp_set_blocktime(37)
    try:
        solver = pardiso.PardisoSolver(a)
        x = solver.solve(b)
        assert omp.kmp_get_blocktime() == 37
    finally:
        omp.kmp_set_blocktime(own)
    assert during == [pardiso.BLOCKTIME] * 2  # the factorization and the solve
    assert np.array_equal(x, plain)


@needs_mkl
def test_pardiso_refuses_a_singular_matrix_and_factorize_falls_back():
    """A graph Laplacian (rows summing to zero: singular) needs a perturbed pivot: PARDISO
    refuses it rather than solve inexactly; ``factorize`` then takes the next backend."""
    a = _symmetric_indefinite(400, 5) + 0.3 * scipy.sparse.identity(400)
    with pytest.raises(pardiso.PardisoError, match="perturbed"):
        pardiso.PardisoSolver(a)
    with pytest.raises(RuntimeError, match="none of the factorizations"):
        eigen.factorize(a, None, ("pardiso",))


def test_factorize_without_mkl_uses_superlu(monkeypatch):
    """Where mkl_rt cannot be loaded PARDISO says how to get it and SuperLU solves instead."""
    monkeypatch.setitem(pardiso._state, "lib", None)
    assert not pardiso.available()
    with pytest.raises(pardiso.PardisoError, match="pip install mkl"):
        pardiso.PardisoSolver(_symmetric_indefinite(100, 1))
    a = _symmetric_indefinite(400, 2)
    name, solver = eigen.factorize(a, None)
    assert name == "superlu" and isinstance(solver, native.LUSolver)
    b = np.random.default_rng(1).standard_normal(400)
    np.testing.assert_allclose(a @ solver.solve(b), b, atol=1e-9)
    with pytest.raises(ValueError, match="unknown factorization 'cholmod'"):
        eigen.factorize(a, None, ("cholmod",))


def test_the_environment_chooses_the_factorization(monkeypatch):
    """``$SSS_RT_FACTORIZATION`` replaces the order tried (to get a machine without MKL's
    layers); unset or blank, PARDISO first."""
    monkeypatch.delenv("SSS_RT_FACTORIZATION", raising=False)
    assert eigen.configured_backends() == ("pardiso", "superlu")
    monkeypatch.setenv("SSS_RT_FACTORIZATION", " superlu ")
    assert eigen.configured_backends() == ("superlu",)
    stats = eigen.EigenStats()
    lap = _symmetric_indefinite(400, 3) + 0.3 * scipy.sparse.identity(400)
    eigen.smallest_eigenvectors(lap + 1e-3 * scipy.sparse.identity(400), 4, stats=stats)
    assert stats.factorization == "superlu"
    monkeypatch.setenv("SSS_RT_FACTORIZATION", "superlu,cholmod")
    with pytest.raises(ValueError, match="cholmod"):
        eigen.smallest_eigenvectors(lap, 4)


def test_pixel_blocks_inverse_solves_each_pixels_block():
    """(diag(d_i) + δ·11ᵀ) z_i = r_i at every pixel, against a dense solve per pixel."""
    rng = np.random.default_rng(7)
    d = rng.random((50, 5)) * np.geomspace(1e-2, 1e6, 50)[:, None]
    r = rng.standard_normal((50, 5))
    z = sparsify.pixel_blocks_inverse(d, 100.0)(r)
    for i in range(50):
        block = np.diag(d[i]) + 100.0
        np.testing.assert_allclose(block @ z[i], r[i], rtol=1e-9, atol=1e-9 * np.abs(r[i]).max())


def _sparse_symmetric(n, seed, rng):
    """A random sparse symmetric N×N matrix (~16 entries a row) plus a positive diagonal drawn
    from ``rng``: the shape of L that the relaxed step's operator reads."""
    a = scipy.sparse.random(n, n, density=8 / n, random_state=seed, format="csr")
    return a + a.T + scipy.sparse.diags(rng.random(n))


@pytest.mark.parametrize("layers", [1, 5, 8])
def test_layer_operator_is_the_relaxed_steps_matrix(layers):
    """A·x + diag ⊙ x + δ·rowsum(x) against the sparse product in float64, on 1 and 3 threads
    (the same bits), compiled and SciPy's."""
    rng = np.random.default_rng(layers)
    n = 5003
    a = _sparse_symmetric(n, layers, rng)
    x = rng.standard_normal((n, layers))
    diag = rng.random((n, layers)) * 1e3
    exact = a @ x + diag * x + 100.0 * x.sum(axis=1, keepdims=True)
    got = [native.LayerOperator(a, threads=t)(x, diag, 100.0) for t in (1, 3)]
    got.append(native.LayerOperator(a, compiled=False)(x, diag, 100.0))
    np.testing.assert_array_equal(got[0], got[1])
    for g in got:
        np.testing.assert_allclose(g, exact, rtol=1e-12, atol=1e-12 * np.abs(exact).max())


@pytest.mark.skipif(not native.available(), reason="built without a C compiler")
def test_layer_operator_rejects_columns_out_of_range():
    from sss_rt.segmentation.native import _ext

    ptr = np.array([0, 1, 2], np.int64)
    val, x = np.ones(2), np.ones((2, 3))
    out = np.empty_like(x)
    _ext.layer_operator(ptr, np.array([0, 1], np.int32), val, x, x, out, 2, 2, 3, 1.0, 0, 2)
    np.testing.assert_array_equal(out, np.full((2, 3), 5.0))  # 1 + 1 + 1·3
    for bad in ([0, 2], [-1, 0]):
        with pytest.raises(ValueError, match="out of range"):
            _ext.layer_operator(ptr, np.array(bad, np.int32), val, x, x, out, 2, 2, 3, 1.0, 0, 2)


@pytest.mark.skipif(not native.available(), reason="built without a C compiler")
def test_triangular_solve_rejects_factors_without_their_diagonals():
    from sss_rt.segmentation.native import _ext

    n = 3
    ptr = np.array([0, 1, 2, 3], np.int64)
    idx = np.array([0, 1, 2], np.int32)  # diagonal only: fine
    val = np.ones(3)
    x = np.ones((n, 2))
    _ext.tri_solve(ptr, idx, val, ptr, idx, val, x, n, 3, 3, 2)
    with pytest.raises(ValueError, match="layout"):
        _ext.tri_solve(ptr, idx[::-1].copy(), val, ptr, idx, val, x, n, 3, 3, 2)
    with pytest.raises(ValueError, match="R must be"):
        _ext.tri_solve(ptr, idx, val, ptr, idx, val, np.ones((n, 33)), n, 3, 3, 33)


def test_held_out_synthetic_instances_are_recovered():
    """Each instance's best layer (α > 0.5) on held-out scenes (the seed `sss-rt eval` uses,
    never trained on): mean IoU 0.792 measured over 15 instances of 4 scenes at 96×96 with 50
    eigenvectors and 20 initial segments (benchmarks/RESULTS-segment.md: the defaults at
    160×160); gate 0.70."""
    from sss_rt import Extractor
    from sss_rt.segmentation import SoftSegmenter
    from sss_rt.synthetic import HELD_OUT_SEED, SyntheticScenes

    data = SyntheticScenes((96, 96), seed=HELD_OUT_SEED)
    cfg = SegmentConfig(scale=1.0, superpixels=300, eigenvectors=50, initial_segments=20)
    ious = []
    with Extractor(device="cpu") as ex:
        seg = SoftSegmenter(ex, cfg)
        for i in range(4):
            image, inst = data[i]
            alphas = seg.segment(image).alphas > 0.5
            for label in np.unique(inst[inst > 0]):
                mask = (inst == label)[..., None]
                inter = (alphas & mask).sum(axis=(0, 1))
                union = (alphas | mask).sum(axis=(0, 1))
                ious.append(float((inter / np.maximum(union, 1)).max()))
    assert len(ious) >= 12
    assert np.mean(ious) >= 0.70, ious


def test_features_keyword_is_a_deprecated_spelling_of_embedding():
    """``features`` means the raw 128-d network output everywhere else; segment() takes the
    3-d ``embedding`` and still accepts ``features=`` with a deprecation warning."""
    img = (_image(24, 32, seed=2) * 255).astype(np.uint8)
    embedding = np.zeros((24, 32, 3), np.float32)
    embedding[:, 16:] = 1.0
    config = SegmentConfig(scale=1.0, **FAST)
    from sss_rt import segment

    new = segment(img, embedding, config)
    with pytest.warns(DeprecationWarning, match="embedding="):
        old = segment(img, config=config, features=embedding)
    np.testing.assert_array_equal(new.alphas, old.alphas)
    with pytest.raises(TypeError, match="embedding= only"):
        segment(img, embedding, config, features=embedding)


@pytest.mark.parametrize(
    ("h", "w"), [(200, 1), (1, 200), (2, 2), (30, 40)], ids=["wide1", "tall1", "2x2", "small"]
)
def test_degenerate_shapes_give_layers(h, w):
    """Photos one pixel wide or tall, tiny, or with fewer pixels than the 2,500 superpixels
    asked: K layers in [0, 1] summing to 1, in well under a second (default settings)."""
    import time

    rng = np.random.default_rng(h * 1000 + w)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    t = time.perf_counter()
    alphas = segment_arrays(image, rng.random((h, w, 3)).astype(np.float32), SegmentConfig())
    assert time.perf_counter() - t < 10  # a generous bound: ~0.7 s measured on 2 cores
    assert alphas.shape == (h, w, 5) and np.isfinite(alphas).all()
    assert alphas.min() >= 0 and alphas.max() <= 1
    np.testing.assert_allclose(alphas.sum(axis=2), 1.0, atol=1e-6)


def test_uniform_and_one_object_photos():
    """A uniform photo is one layer (at once: it took 4.4 s at 320×240 through a degenerate
    spectrum); one colour with a small object gives the object its own layer."""
    uniform = np.full((120, 160, 3), 128, np.uint8)
    alphas = segment_arrays(uniform, np.full((120, 160, 3), 0.5, np.float32), SegmentConfig())
    np.testing.assert_array_equal(alphas[..., 0], 1.0)
    assert not alphas[..., 1:].any()
    photo = np.full((120, 160, 3), 200, np.uint8)
    photo[50:65, 70:85] = (20, 40, 220)
    emb = np.full((120, 160, 3), 0.3, np.float32)
    emb[50:65, 70:85] = (0.9, 0.1, 0.5)
    alphas = segment_arrays(photo, emb, SegmentConfig())
    mask = np.zeros((120, 160), bool)
    mask[50:65, 70:85] = True
    layers = alphas > 0.5
    iou = max((layers[..., k] & mask).sum() / (layers[..., k] | mask).sum() for k in range(5))
    assert iou > 0.8


@pytest.mark.skipif(not native.available(), reason="needs the compiled kernel")
@pytest.mark.parametrize("level", [2, 1, 0])
def test_gram_kernel_skips_pixels_of_weight_zero(level):
    """Pixels of weight 0 add nothing and are never read: NaN in their rows of E stays out of
    the Grams (a kernel that multiplied them would give NaN), and the Grams equal those of the
    other pixels alone."""
    rng = np.random.default_rng(3)
    n, m = 5000, 37
    vecs = rng.standard_normal((n, m))
    w = rng.random((3, n)).astype(np.float32)
    zero = rng.random(n) < 0.6
    w[:, zero] = 0.0
    w[1] = 0.0  # a segment with no pixel left
    padded, _ = native.pad_vectors(vecs)
    poisoned = padded.copy()
    poisoned[zero] = np.nan
    got = native.weighted_grams((poisoned, m), w, level=level)
    assert np.isfinite(got).all()
    assert (got[1] == 0).all()
    kept = native.weighted_grams((np.ascontiguousarray(padded[~zero]), m), w[:, ~zero], level=level)
    np.testing.assert_allclose(got, kept, rtol=1e-6, atol=1e-6 * np.abs(kept).max())


@pytest.mark.parametrize("width", [None, 1, 7, 16, 100])
def test_sparse_product_is_scipys(width):
    """The eigensolver's L·X (compiled, rows over 1 and 3 threads: the same bits) against
    SciPy's product, for a vector and blocks of 1 to 100 columns, column-major input too."""
    rng = np.random.default_rng(11)
    n = 4001
    a = scipy.sparse.random(n, n, density=9 / n, random_state=4, format="csr")
    a = a + a.T
    x = rng.standard_normal(n if width is None else (n, width))
    if width:
        x = np.asfortranarray(x)
    exact = a @ x
    got = [native.SparseProduct(a, threads=t) @ x for t in (1, 3)]
    got.append(native.SparseProduct(a, compiled=False) @ x)
    np.testing.assert_array_equal(got[0], got[1])
    for g in got:
        assert g.shape == exact.shape
        np.testing.assert_allclose(g, exact, rtol=1e-12, atol=1e-12 * np.abs(exact).max())


@pytest.mark.parametrize("layers", [1, 5])
def test_cg_update_and_dot_are_the_numpy_steps(layers):
    """The relaxed CG's fused pieces — q = A·p with pᵀq, and x += αp, r −= αq, z = M·r with
    (rᵀz, rᵀr) — compiled on 1 and 3 threads (the same bits) against NumPy's."""
    rng = np.random.default_rng(layers)
    n = 3001
    a = _sparse_symmetric(n, layers, rng)
    p = rng.standard_normal((n, layers))
    diag = rng.random((n, layers)) * 1e3
    d = rng.random((n, layers)) * np.geomspace(1e-2, 1e6, n)[:, None]
    inv, coupling = sparsify.pixel_blocks_terms(d, 100.0)
    exact_q = a @ p + diag * p + 100.0 * p.sum(axis=1, keepdims=True)
    x0, r0 = rng.standard_normal((2, n, layers))
    r1 = r0 - 0.3 * exact_q
    z1 = sparsify.pixel_blocks_inverse(d, 100.0)(r1)
    results = []
    for op in (native.LayerOperator(a, threads=1), native.LayerOperator(a, threads=3),
               native.LayerOperator(a, compiled=False)):  # fmt: skip
        q, pq = op.with_dot(p, diag, 100.0)
        np.testing.assert_allclose(q, exact_q, rtol=1e-12, atol=1e-12 * np.abs(exact_q).max())
        assert pq == pytest.approx(float(np.vdot(p, exact_q)), rel=1e-12)
        x, r, z = x0.copy(), r0.copy(), np.empty_like(r0)
        rz, rr = op.cg_update(x, r, p, exact_q, inv, coupling, z, 0.3)
        np.testing.assert_allclose(x, x0 + 0.3 * p, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(r, r1, rtol=1e-14, atol=1e-12)
        # z against NumPy's on the r the step made (its r − αq may round once, as an FMA),
        # entry by entry within rounding of the terms it sums: with d ~ 1e-4 the two terms
        # cancel to 1e-7 of their size, so |z| is no measure of the error
        inv_r = np.abs(inv * r)
        size = inv_r + inv * coupling[:, None] * inv_r.sum(axis=1, keepdims=True)
        assert np.all(np.abs(z - sparsify.pixel_blocks_inverse(d, 100.0)(r)) <= 1e-14 * size)
        assert rz == pytest.approx(float(np.vdot(r1, z1)), rel=1e-12)
        assert rr == pytest.approx(float(np.vdot(r1, r1)), rel=1e-12)
        results.append((q, pq, x, r, z, rz, rr))
    for u, v in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(u, v)


def _irls_alpha(k=6, n=20_001, seed=2):
    """α at and around the floor (|α| ≤ τ, |1 − α| ≤ τ), far from it, negative, large, NaN."""
    rng = np.random.default_rng(seed)
    alpha = rng.standard_normal((k, n)) * 0.4
    alpha[:, ::5] = 0.0
    alpha[:, 1::5] = rng.uniform(-sparsify.TAU, sparsify.TAU, alpha[:, 1::5].shape)
    alpha[:, 2::7] = 1.0 + rng.uniform(-2 * sparsify.TAU, 2 * sparsify.TAU, alpha[:, 2::7].shape)
    alpha[:, 3::11] = 1.0
    alpha[:, 4::13] *= 1e4
    alpha[3, 17] = np.nan
    return alpha


def _reference_weights(alpha):
    """e₁, e₀ in float32 from float64 powers (x^g correctly rounded to float32 but for ties)."""
    g, s1, s0, tau = sparsify._scales(sparsify.GAMMA)
    a = alpha.astype(np.float32)
    out = []
    for x, s in ((np.abs(a - np.float32(1.0)), s1), (np.abs(a), s0)):
        with np.errstate(invalid="ignore"):
            p = (np.maximum(x, np.float32(tau)).astype(np.float64) ** g).astype(np.float32)
        out.append(p * np.float32(s))
    return out


@pytest.mark.skipif(not native.available(), reason="needs the compiled kernel")
def test_irls_terms_are_the_float64_formulas():
    """The compiled IRLS terms against float64 NumPy: the last row 1 − Σ others exactly, the
    weights' powers correctly rounded (the same float32 bits but for near-ties: ≤ 1e-4 of the
    entries, each within 1 ULP), the floor's weight where α is pinned, NaN kept, the
    right-hand sides within float32 summation's rounding; and the same bits on 1 and 2
    threads."""
    k, n, m = 6, 20_001, 37
    alpha = _irls_alpha(k, n)
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((n, m)) / np.sqrt(n)
    padded = native.pad_vectors(vecs)
    scales = sparsify._scales(sparsify.GAMMA)
    base = native.irls_floor(scales)
    with_nan, _ = native.irls_terms(alpha, padded, scales, False)  # α as given: NaN kept
    assert np.isnan(with_nan[3, 17]) and np.isfinite(np.delete(with_nan, 3 * n + 17)).all()
    alpha[3, 17] = 0.5
    runs = []
    for threads in (1, 2):
        a = alpha.copy()
        a[-1] = 7.0  # to be replaced
        runs.append((a, *native.irls_terms(a, padded, scales, True, threads=threads)))
    for u, v in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(u, v)
    a, delta, rhs = runs[0]
    np.testing.assert_array_equal(a[-1], np.subtract(1.0, a[:-1].sum(axis=0)))
    e1, e0 = _reference_weights(a)
    want = (e1 + e0) - np.float32(base)
    assert delta.dtype == np.float32 and delta.shape == (k, n)
    assert (delta != want).mean() <= 1e-4
    np.testing.assert_allclose(delta + base, want + base, rtol=1.2e-7)
    pinned = (a == 0) | (a == 1)
    assert (delta[pinned] == 0).all() and pinned.sum() > 1000
    w = np.where(np.arange(k)[:, None] < k - 1, e1, e0).astype(np.float64)
    e32 = vecs.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(rhs, w @ e32, rtol=0, atol=1e-5 * (np.abs(w) @ np.abs(e32)).max())


@pytest.mark.skipif(not native.available(), reason="needs the compiled kernel")
def test_compiled_irls_terms_and_numpys_agree():
    """The compiled pass and the NumPy passes it replaces (``sparsify._Terms``): the same
    floor, the Grams' weights within float32 rounding (NumPy's own power), the right-hand
    sides within float32 summation's, α completed alike."""
    k, n, m = 5, 9_000, 20
    alpha = _irls_alpha(k, n, seed=4)
    alpha[3, 17] = 0.3
    vecs = np.random.default_rng(5).standard_normal((n, m)) / np.sqrt(n)
    got = []
    for compiled in (None, False):
        terms = sparsify._Terms(sparsify._Grams(vecs, compiled=compiled), sparsify.GAMMA)
        a = alpha.copy()
        got.append((terms.base, a, *terms(a, True)))
    (b1, a1, d1, r1), (b2, a2, d2, r2) = got
    assert b1 == b2
    np.testing.assert_array_equal(a1, a2)
    # the weights within 1e-6, their departures within that and one rounding at the floor's size
    np.testing.assert_allclose(d1, d2, rtol=1e-6, atol=1e-6 * b1 + np.spacing(np.float32(b1)))
    scale = np.abs(r2).max()
    np.testing.assert_allclose(r1, r2, rtol=0, atol=1e-5 * scale)
