"""The Python API."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sss_rt import Extractor, ImageError, PostprocessConfig
from sss_rt.postprocess import postprocess


def test_extract_array_and_path_agree(onnx_path, rng, tmp_path):
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    with Extractor(onnx_path) as ex:
        a = ex.extract(image, return_features=True)
        b = ex.extract(path)
    assert a.embedding.shape == (50, 70, 3) and a.embedding.dtype == np.float32
    assert a.embedding.min() >= 0.0 and a.embedding.max() <= 1.0
    assert a.features.shape == (50, 70, 128)
    assert b.features is None and b.source == path
    np.testing.assert_array_equal(a.embedding, b.embedding)
    # the result is exactly the post-processing of the backend's features
    expected, _ = postprocess(np.moveaxis(a.features, -1, 0), image, PostprocessConfig())
    np.testing.assert_array_equal(a.embedding, expected)


def test_postprocess_settings_are_used(onnx_path, rng):
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    with Extractor(onnx_path, radius=1) as ex1, Extractor(onnx_path, radius=6) as ex6:
        assert ex1.config.radius == 1 and ex6.config.radius == 6
        assert not np.array_equal(ex1.extract(image).embedding, ex6.extract(image).embedding)


def test_extract_many_is_lazy_and_ordered(onnx_path, rng):
    images = [rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) for i in range(3)]
    with Extractor(onnx_path) as ex:
        results = ex.extract_many(images)
        assert not isinstance(results, list)
        shapes = [r.embedding.shape[:2] for r in results]
    assert shapes == [(20, 30), (21, 30), (22, 30)]


def test_closed_extractor_and_bad_inputs(onnx_path, tmp_path):
    ex = Extractor(onnx_path)
    with pytest.raises(ValueError, match="uint8"):
        ex.extract(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ImageError):
        ex.extract(tmp_path / "missing.jpg")
    ex.close()
    with pytest.raises(RuntimeError, match="closed"):
        ex.extract(np.zeros((10, 10, 3), np.uint8))


def test_default_model_is_bundled_and_self_describing(rng):
    from sss_rt import default_model_path
    from sss_rt.model_info import read_model_info

    path = default_model_path()
    assert path.stat().st_size <= 32 * 1024 * 1024
    info = read_model_info(path)
    assert info.backbone == "resnet18" and info.training["weights"] == "fp16"
    with Extractor() as ex:
        r = ex.extract(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert r.embedding.shape == (48, 64, 3)


def test_large_image_downscaled_then_embedding_resized_back(onnx_path, caplog):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    with (
        Extractor(onnx_path, max_megapixels=0.03) as ex,
        caplog.at_level("WARNING", logger="sss_rt"),
    ):
        r = ex.extract(image, return_features=True)
    assert r.embedding.shape == (300, 400, 3) and r.embedding.dtype == np.float32
    assert r.embedding.min() >= 0.0 and r.embedding.max() <= 1.0
    h, w = r.features.shape[:2]
    assert h * w <= 0.03e6 and abs(w / h - 4 / 3) < 0.02
    assert r.scale == pytest.approx(w / 400)
    assert "above the 0.03 MP limit" in caplog.text
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    with Extractor(onnx_path, max_megapixels=None) as ex:
        direct = ex.extract(small)
    assert direct.scale == 1.0
    ref = np.moveaxis(ex_features(onnx_path, small), 0, -1)  # whole-image ONNX Runtime
    np.testing.assert_allclose(r.features, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    expected = cv2.resize(direct.embedding, (400, 300), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(r.embedding, np.clip(expected, 0, 1), atol=1e-6)


def ex_features(onnx_path, image):
    with Extractor(onnx_path) as ex:
        return ex.features(image)


def test_large_image_refused_with_clear_error(onnx_path):
    image = np.zeros((300, 400, 3), np.uint8)
    limit = r"400×300 \(0\.1 MP\), above the 0\.1 MP limit"
    with (
        Extractor(onnx_path, max_megapixels=0.1, large="refuse") as ex,
        pytest.raises(ImageError, match=limit),
    ):
        ex.extract(image)
    with pytest.raises(ValueError, match="large"):
        Extractor(onnx_path, large="crop")


@pytest.mark.parametrize("mode", ["exact", "fast", "matlab"])
def test_split_path_matches_whole_graph(onnx_path, mode):
    """Above tile_megapixels the trunk runs once and the head's bands are computed as the
    post-processing reads them; below it the whole graph runs. Same result in every mode."""
    rng = np.random.default_rng(8)
    image = cv2.GaussianBlur(rng.integers(0, 256, (181, 203, 3), dtype=np.uint8), (0, 0), 3)
    cfg = PostprocessConfig(mode=mode, band_mb=1)  # a band of a few rows: many bands
    with Extractor(onnx_path, postprocess=cfg, tile_megapixels=None) as ex:
        assert not ex._splits(image)
        whole = ex.extract(image, return_features=True)
    with Extractor(onnx_path, postprocess=cfg, tile_megapixels=0.001) as ex:
        assert ex.can_tile() and ex._splits(image)
        split = ex.extract(image, return_features=True)
        np.testing.assert_array_equal(ex.features(image), np.moveaxis(split.features, -1, 0))
    scale = np.abs(whole.features).max()
    assert np.abs(split.features - whole.features).max() <= 1e-5 * scale
    np.testing.assert_allclose(split.basis.components, whole.basis.components, atol=1e-5)
    assert np.abs(split.embedding - whole.embedding).max() <= 1e-4


@pytest.mark.parametrize("mode", ["exact", "fast", "matlab"])
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_no_mode_or_backend_is_capped_below_max_megapixels(onnx_path, mode, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    big = np.zeros((4000, 6000, 3), np.uint8)  # 24 MP: only the size rule is exercised here
    with Extractor(onnx_path, backend=backend, postprocess=mode) as ex:
        assert ex.can_tile() and ex._limit()[0] == 64.0
        assert ex._fit(big, None)[1] == 1.0  # not downscaled


def test_whole_graph_execution_gets_the_lower_limit(onnx_path):
    big = np.zeros((1500, 1500, 3), np.uint8)  # 2.25 MP
    with Extractor(onnx_path, max_megapixels=64, tile_megapixels=None) as ex:
        assert not ex.can_tile()
        assert ex._limit()[0] == 2.0
    with (
        Extractor(onnx_path, large="refuse", tile_megapixels=None) as ex,
        pytest.raises(ImageError, match=r"2 MP limit for whole-graph execution .*--no-tiling"),
    ):
        ex.extract(big)


def test_backend_options_reach_the_backend(onnx_path):
    """``backend_options`` is how the backends' own settings (execution, TensorRT's build
    settings and strictness, OpenVINO's engine head) are reached from an Extractor."""
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    with Extractor(onnx_path, backend="onnxruntime") as split:
        assert split.backend.splits
        expected = split.extract(image).embedding
    opts = {"execution": "whole"}
    with Extractor(onnx_path, backend="onnxruntime", backend_options=opts) as whole:
        assert not whole.backend.splits
        np.testing.assert_allclose(whole.extract(image).embedding, expected, atol=1e-4)
