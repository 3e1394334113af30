"""Inference form and ONNX export: parity training form ↔ inference form ↔ ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from conftest import make_net  # noqa: E402
from sss_rt.export.inference_form import InferenceNet  # noqa: E402

from sss_rt.model_info import read_model_info  # noqa: E402


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_inference_form_equals_training_form(backbone):
    net = make_net(backbone, seed=7)
    inf = InferenceNet(net).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in inf.modules())
    x = torch.randint(0, 256, (1, 53, 71, 3), dtype=torch.uint8)
    with torch.no_grad():
        a, b = net(x).numpy(), inf(x).numpy()
    assert rel_err(a, b) <= 1e-5


def test_feature_scale_multiplies_output_and_is_folded_into_inference_form():
    net = make_net("resnet18", seed=7)
    scaled = make_net("resnet18", seed=7)
    scaled.feature_scale = 16.0
    x = torch.randint(0, 256, (1, 37, 45, 3), dtype=torch.uint8)
    with torch.no_grad():
        base, out = net(x).numpy(), scaled(x).numpy()
        folded = InferenceNet(scaled).eval()(x).numpy()
    assert rel_err(16.0 * base, out) <= 1e-6
    assert rel_err(out, folded) <= 1e-5
    assert scaled.feature_scale == 16.0  # folding works on a copy
    with pytest.raises(ValueError, match="feature_scale"):
        type(net)("resnet18", feature_scale=0.0)


def test_onnx_model_is_valid_and_self_describing(onnx_path):
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    inp = model.graph.input[0]
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", "height", "width", 3]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    for node in model.graph.node:
        if node.op_type == "Resize":
            modes = {
                a.name: a.s.decode() for a in node.attribute if a.type == onnx.AttributeProto.STRING
            }
            assert modes["mode"] == "linear"
            assert modes["coordinate_transformation_mode"] in ("half_pixel", "pytorch_half_pixel")
    info = read_model_info(onnx_path)
    assert info.backbone == "resnet18" and info.feature_dim == 128
    assert info.mean == pytest.approx((0.485, 0.456, 0.406))
    assert "checkpoint_sha256" in info.training


@pytest.mark.parametrize("size", [(97, 131), (257, 391), (480, 640)])
def test_onnxruntime_matches_pytorch(tiny_net, onnx_path, size):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(size[0]).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = tiny_net(torch.from_numpy(x)).numpy()
    got = session.run(None, {"image": x})[0]
    assert got.shape == (1, 128, *size)
    assert rel_err(expected, got) <= 1e-4


def test_dynamic_batch(onnx_path):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    batched = session.run(None, {"image": x})[0]
    single = session.run(None, {"image": x[1:2]})[0]
    np.testing.assert_allclose(batched[1], single[0], rtol=0, atol=1e-4 * np.abs(single).max())


def test_export_is_atomic_on_failure(tiny_net, tmp_path):
    from sss_rt.export.onnx_export import export_onnx

    target = tmp_path / "m.onnx"
    with pytest.raises(ValueError):
        export_onnx(tiny_net, target, opset=11)
    assert list(tmp_path.iterdir()) == []


def test_fp16_weights_halve_size_and_keep_parity(checkpoint_path, onnx_path, tmp_path):
    from sss_rt.export.onnx_export import export_checkpoint

    from sss_rt.backends import create_backend

    half = tmp_path / "half.onnx"
    info = export_checkpoint(checkpoint_path, half, fp16_weights=True)
    assert info.training["weights"] == "fp16"
    onnx.checker.check_model(onnx.load(str(half)))
    assert half.stat().st_size < 0.55 * onnx_path.stat().st_size
    x = np.random.default_rng(3).integers(0, 256, (1, 61, 83, 3), dtype=np.uint8)
    full = create_backend("onnxruntime", onnx_path).run(x)
    got = create_backend("onnxruntime", half).run(x)
    assert rel_err(full, got) <= 1e-3
    from_torch = create_backend("torch", half).run(x)  # the torch backend reads fp16 weights too
    assert rel_err(got, from_torch) <= 1e-4


def test_bundled_and_exported_graphs_pass_tensorrt_parser_rules(tmp_path):
    """TensorRT's parser rules (uint8 only into a Cast, supported ops, Resize modes, opset),
    checked statically on the bundled model; a graph that breaks one is reported."""
    import onnx
    from sss_rt.export import tensorrt_rules

    from sss_rt.extractor import default_model_path

    model = onnx.load(str(default_model_path()))
    assert tensorrt_rules.problems(model) == []
    # the old layout (uint8 → Transpose → Cast) is caught, and rewritten without changing values
    old = onnx.ModelProto()
    old.CopyFrom(model)
    cast = next(n for n in old.graph.node if list(n.input) == ["image"])
    transpose = next(n for n in old.graph.node if cast.output[0] in n.input)
    assert (cast.op_type, transpose.op_type) == ("Cast", "Transpose")
    transpose.input[0], transpose.output[0], cast.input[0], cast.output[0] = (
        "image",
        "t",
        "t",
        transpose.output[0],
    )
    bad = tensorrt_rules.problems(old)
    assert any("uint8 input 'image' feeds Transpose" in p for p in bad)
    assert tensorrt_rules.cast_input_first(old) == 1
    assert tensorrt_rules.problems(old) == []
    resize = next(n for n in old.graph.node if n.op_type == "Resize")
    next(a for a in resize.attribute if a.name == "mode").s = b"bicubic"
    assert any("Resize" in p for p in tensorrt_rules.problems(old))
