"""The Python API."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sss_rt import Extractor, ImageError, PostprocessConfig
from sss_rt.postprocess.cpu import postprocess


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
