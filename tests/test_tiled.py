"""Tiled extraction: the trunk/head split of the exported graph and the two-pass banded
post-processing, against the whole-image ONNX Runtime run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sss_rt.backends import create_backend
from sss_rt.errors import ModelError
from sss_rt.postprocess import native
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.cpu import postprocess
from sss_rt.tiled import TiledNetwork, postprocess_streaming, split_model

pytestmark = pytest.mark.skipif(not native.available(), reason="tiling needs the compiled kernel")


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(11)
    import cv2

    return cv2.GaussianBlur(rng.integers(0, 256, (123, 157, 3), dtype=np.uint8), (0, 0), 2)


def test_head_rows_match_onnxruntime(onnx_path, scene):
    ref = create_backend("onnxruntime", onnx_path, device="cpu").run(scene[None])[0]
    trunk = TiledNetwork(onnx_path).trunk(scene)
    scale = np.abs(ref).max()
    assert np.abs(trunk.rows(0, 123) - ref).max() <= 1e-5 * scale
    for y0, y1 in [(0, 1), (7, 30), (60, 61), (100, 123)]:
        assert np.abs(trunk.rows(y0, y1) - ref[:, y0:y1]).max() <= 1e-5 * scale
    # the 512-channel intermediate computed a few rows at a time gives the same rows
    np.testing.assert_array_equal(trunk.rows(5, 50, chunk_mb=1), trunk.rows(5, 50))


@pytest.mark.parametrize("keep", [True, False])
def test_streaming_matches_whole_image(onnx_path, scene, keep):
    ref_feats = create_backend("onnxruntime", onnx_path, device="cpu").run(scene[None])[0]
    ref, ref_basis = postprocess(ref_feats, scene)
    trunk = TiledNetwork(onnx_path).trunk(scene)
    cfg = PostprocessConfig(band_mb=1)
    got, basis, kept = postprocess_streaming(trunk, scene, cfg, keep_features=keep)
    assert (kept is not None) == keep
    np.testing.assert_allclose(basis.components, ref_basis.components, atol=1e-5)
    assert np.abs(got - ref).max() <= 1e-4


def test_linear_taps_follow_onnx_half_pixel_rule():
    i0, i1, w1 = native.linear_taps(8, 2)  # ×4: x_src = (x + 0.5) / 4 − 0.5, clamped to [0, 1]
    src = np.clip((np.arange(8) + 0.5) / 4 - 0.5, 0, 1)
    np.testing.assert_allclose(i0 + w1, src, atol=1e-7)
    assert i0.min() == 0 and i1.max() == 1


def test_split_refuses_graphs_that_are_not_ours(tmp_path):
    x = onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["image"], ["features"])], "g", [x], [y]
    )
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    with pytest.raises(ModelError, match="cannot be tiled"):
        split_model(path)


@pytest.mark.parametrize("b0,b1", [(0, 10), (3, 40), (100, 123), (0, 123)])
def test_band_guide_equals_crop_of_whole_image_statistics(scene, b0, b1):
    from sss_rt.postprocess.cpu import image_to_guide
    from sss_rt.tiled import band_guide

    whole = native.PackedGuide.compute(image_to_guide(scene), 5, 1e-2)
    band = band_guide(scene, b0, b1, 5, 1e-2)
    for name in ("pixel", "coef"):
        np.testing.assert_allclose(
            getattr(band, name), getattr(whole, name)[b0:b1], rtol=1e-5, atol=1e-5
        )
    # the window counts 1/N(x): the pixel table's last entry, the coefficient table's first
    np.testing.assert_array_equal(band.pixel[..., 3], whole.pixel[b0:b1, :, 3])
    np.testing.assert_array_equal(band.coef[..., 0], whole.coef[b0:b1, :, 0])


@pytest.mark.parametrize("size,low1,low2", [((37, 53), (10, 14), (5, 7)), ((8, 8), (2, 2), (1, 1))])
def test_compiled_head_rows_match_float64_reference(rng, size, low1, low2):
    """ReLU(fuse_input·t_in + up(P1) + up(D) + bias) with ONNX Resize's bilinear taps."""

    (h, w), c, cin = size, 6, 4
    t_in = rng.normal(size=(cin, h, w)).astype(np.float32)
    fin = rng.normal(size=(c, cin)).astype(np.float32)
    bias = rng.normal(size=c).astype(np.float32)
    lows = [rng.normal(size=(c, *low)).astype(np.float32) for low in (low1, low2)]

    def upsample(low):  # separable: rows then columns, float64
        y0, y1, wy = native.linear_taps(h, low.shape[1])
        x0, x1, wx = native.linear_taps(w, low.shape[2])
        rows = low[:, y0] * (1 - wy[:, None]) + low[:, y1] * wy[:, None]
        return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx

    ref = np.einsum("cj,jhw->chw", fin.astype(np.float64), t_in) + bias[:, None, None]
    ref = np.maximum(ref + sum(upsample(low.astype(np.float64)) for low in lows), 0.0)
    y0, n = 3, h - 5
    ups = []
    for low in lows:
        yi0, yi1, wy = native.linear_taps(h, low.shape[1])
        lo = int(yi0[y0 : y0 + n].min())
        hi = int(yi1[y0 : y0 + n].max()) + 1
        taps = native.int32_taps((yi0[y0 : y0 + n] - lo, yi1[y0 : y0 + n] - lo, wy[y0 : y0 + n]))
        block = np.ascontiguousarray(low[:, lo:hi])
        ups.append((block, *taps, *native.int32_taps(native.linear_taps(w, low.shape[2]))))
    got = native.hidden_rows(t_in, fin, bias, tuple(ups), y0, n, threads=2)
    np.testing.assert_allclose(got, ref[:, y0 : y0 + n], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="out of its block"):
        bad = (np.ascontiguousarray(ups[0][0][:, :1]), *ups[0][1:])
        native.hidden_rows(t_in, fin, bias, (bad, ups[1]), y0, n)
