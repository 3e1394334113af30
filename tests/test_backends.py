"""Backends: one interface, same weights, clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sss_rt.backends import available_backends, create_backend
from sss_rt.errors import BackendUnavailableError, ModelError


def test_onnxruntime_and_torch_run_the_same_weights(onnx_path, checkpoint_path, rng):
    pytest.importorskip("torch")
    x = rng.integers(0, 256, (1, 45, 61, 3), dtype=np.uint8)
    ort_b = create_backend("onnxruntime", onnx_path, device="cpu", threads=1)
    torch_onnx = create_backend("torch", onnx_path, device="cpu")
    torch_ckpt = create_backend("auto", checkpoint_path, device="cpu")
    assert torch_ckpt.name == "torch" and ort_b.name == "onnxruntime"
    a, b, c = (be.run(x) for be in (ort_b, torch_onnx, torch_ckpt))
    scale = np.abs(a).max()
    assert a.shape == (1, 128, 45, 61) and a.dtype == np.float32
    assert all(f.flags.c_contiguous for f in (a, b, c))  # planar, as the post-processing reads
    assert np.abs(a - b).max() <= 1e-4 * scale
    assert np.abs(b - c).max() <= 1e-5 * scale
    assert ort_b.info == torch_onnx.info  # both read the same file's metadata
    assert torch_ckpt.info.backbone == ort_b.info.backbone
    assert ort_b.describe()["providers"] == ["CPUExecutionProvider"]
    assert ort_b.describe()["execution"] == "split" and ort_b.splits


def test_backend_rejects_bad_input(onnx_path):
    be = create_backend("onnxruntime", onnx_path)
    with pytest.raises(ValueError, match="uint8"):
        be.run(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        be.run(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_missing_and_non_onnx_model(tmp_path, backend):
    if backend == "torch":
        pytest.importorskip("torch")
    with pytest.raises(ModelError, match="not found"):
        create_backend(backend, tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ModelError):
        create_backend(backend, junk)


def test_foreign_onnx_model_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ModelError, match="not an sss-rt"):
        create_backend("onnxruntime", path)


def test_cuda_without_gpu_is_a_clear_error(onnx_path):
    from sss_rt.backends.onnxruntime import gpu_providers

    if gpu_providers():
        pytest.skip("this onnxruntime has GPU providers")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        create_backend("onnxruntime", onnx_path, device="cuda")


def test_unknown_backend_and_availability(onnx_path):
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("magic", onnx_path)
    avail = available_backends()
    assert avail["onnxruntime"] is True
    assert set(avail) == {"onnxruntime", "openvino", "torch", "tensorrt"}
