"""The authors' semantic feature network: its variables and its ONNX graph, built from NumPy.

The network of Aksoy et al.'s released extractor (DeepLab ResNet-101 in its Caffe form plus a
hypercolumn head metric-learned on COCO-Stuff), described here from its published definition:

- Input: RGB → BGR, float 0–255 minus the Caffe mean :data:`MEAN_BGR`, no scaling; reflect
  padding of :data:`PAD` pixels on every side, cropped off the output.
- Backbone: conv1 7×7/2 and max pool 3×3/2, then bottleneck blocks res2 (3), res3 (4; the
  stride on res3a's 1×1 convolutions), res4 (23, dilation 2), res5 (3, dilation 4): output
  stride 8. TensorFlow ``SAME`` padding (the extra pixel of an even size at the end: ONNX
  ``SAME_UPPER``). Batch norm in training mode: every image is normalized by its own
  statistics (ε = 1e-3), which for one image is ONNX ``InstanceNormalization``; the stored
  moving statistics are never used.
- Head: 1×1 convs of the input (÷128) → 4 and of pool1 → 124 and res3b3 → 128 channels, 3×3
  convs of res4b22 → 256 and of res5c *before its ReLU* → 512, each with a bias; the last four
  resized to the padded input's size with TensorFlow 1's ``resize_bilinear`` (source =
  destination × in/out, no half-pixel offset: ONNX ``asymmetric``); concatenated (1024), ReLU;
  fc1 = ReLU(x·A₁·B₁ + b₁) and fc2 = ReLU(fc1·A₂·B₂ + b₂) (rank 256, width 512); output =
  [fc1, fc2]·W₃ + b₃ (128 channels).

Weights are named as in the authors' TensorFlow 1 checkpoint (:func:`variable_spec`), in its
layouts: conv kernels kh×kw×in×out, dense matrices in×out. The graph takes N×H×W×3 uint8 RGB
(N = 1: the statistics are per image) and gives N×128×H×W float32 features.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the Caffe mean the authors subtract, in BGR order
MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
#: reflect padding on every side, cropped off the output
PAD = 50
#: batch norm's ε (their layers' default)
BN_EPS = 1e-3
FEATURE_DIM = 128
#: hypercolumn taps: (name in the checkpoint, backbone layer, kernel, in, out channels)
TAPS = (
    ("hc_cv_0", "input", 1, 3, 4),
    ("hc_cv_1", "pool1", 1, 64, 124),
    ("hc_cv_3", "res3b3_relu", 1, 512, 128),
    ("hc_cv_4", "res4b22_relu", 3, 1024, 256),
    ("hc_cv_5", "res5c", 3, 2048, 512),
)
#: the input tap's convolution reads the centred image divided by this
INPUT_SCALE = 128.0


@dataclass(frozen=True)
class Block:
    """One bottleneck block: ``name`` (``res4b7``), widths, the stride of its first 1×1 convs,
    the dilation of its 3×3 conv, whether it has a projection shortcut (``branch1``)."""

    name: str
    inner: int
    out: int
    stride: int
    dilation: int
    projection: bool

    @property
    def bn(self) -> str:
        """The prefix of its batch-norm layers: ``res4b7`` → ``bn4b7``."""
        return "bn" + self.name[3:]


def blocks() -> list[Block]:
    """ResNet-101's 33 bottleneck blocks with the authors' names, in order."""
    stages = [  # stage, blocks, inner, out, stride, dilation, suffixes
        (2, 3, 64, 256, 1, 1, "abc"),
        (3, 4, 128, 512, 2, 1, None),
        (4, 23, 256, 1024, 1, 2, None),
        (5, 3, 512, 2048, 1, 4, "abc"),
    ]
    out = []
    for stage, count, inner, width, stride, dilation, letters in stages:
        for i in range(count):
            suffix = letters[i] if letters else ("a" if i == 0 else f"b{i}")
            out.append(
                Block(
                    f"res{stage}{suffix}",
                    inner,
                    width,
                    stride if i == 0 else 1,
                    dilation,
                    i == 0,
                )
            )
    return out


def variable_spec() -> dict[str, tuple[int, ...]]:
    """Every variable the network reads, by its checkpoint name, with its shape (float32).

    330 names: 104 conv kernels, 104 × (gamma, beta), the head's 5 convs with biases and its 8
    dense tensors. The checkpoint also holds each batch norm's moving statistics, the unused
    ASPP classifier and perhaps optimizer slots; none of those is read.
    """
    spec: dict[str, tuple[int, ...]] = {"conv1/weights": (7, 7, 3, 64)}
    spec["bn_conv1/gamma"] = spec["bn_conv1/beta"] = (64,)
    width = 64
    for b in blocks():
        convs = [("branch2a", 1, width, b.inner), ("branch2b", 3, b.inner, b.inner)]
        convs.append(("branch2c", 1, b.inner, b.out))
        if b.projection:
            convs.insert(0, ("branch1", 1, width, b.out))
        for branch, k, cin, cout in convs:
            spec[f"{b.name}_{branch}/weights"] = (k, k, cin, cout)
            spec[f"{b.bn}_{branch}/gamma"] = spec[f"{b.bn}_{branch}/beta"] = (cout,)
        width = b.out
    for name, _, k, cin, cout in TAPS:
        spec[f"hypercolumn_layers/{name}/weights"] = (k, k, cin, cout)
        spec[f"hypercolumn_layers/{name}/biases"] = (cout,)
    width = sum(t[4] for t in TAPS)
    for layer in ("fc1_matting", "fc2_matting"):
        spec[f"{layer}/linear/fc_weights1"] = (width, 256)
        spec[f"{layer}/linear/fc_weights2"] = (256, 512)
        spec[f"{layer}/linear/biases"] = (512,)
        width = 512
    spec["fc3_matting/linear/fc_weights1"] = (1024, FEATURE_DIM)
    spec["fc3_matting/linear/fc_biases"] = (FEATURE_DIM,)
    return spec


def batch_norms() -> Iterator[str]:
    """The names of the 104 batch-norm layers (each has gamma, beta and moving statistics)."""
    yield "bn_conv1"
    for b in blocks():
        for branch in ("branch1",) * b.projection + ("branch2a", "branch2b", "branch2c"):
            yield f"{b.bn}_{branch}"


#: graph tensors the split execution cuts at: the taps after their convolutions (before the
#: resize), in :data:`TAPS` order
TAP_OUTPUTS = tuple(f"/{t[0]}/Conv_output" for t in TAPS)


def build_onnx(
    weights: Mapping[str, np.ndarray],
    *,
    opset: int = 17,
    variant: Mapping[str, object] | None = None,
):
    """The network as an ONNX model (``onnx.ModelProto``) from checkpoint-named weights.

    ``variant`` builds deliberately different graphs for the tests that show the parity
    tolerance detects each departure: ``{"resize": "half_pixel"}``, ``{"padding":
    "symmetric"}``, ``{"moving_statistics": {name: (mean, variance)}}`` (batch norm folded with
    stored statistics), ``{"reflect_pad": 0}``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sss_rt.model_info import INPUT_NAME, OUTPUT_NAME

    variant = dict(variant or {})
    resize_mode = str(variant.get("resize", "asymmetric"))
    same = "NOTSET" if variant.get("padding") == "symmetric" else "SAME_UPPER"
    moving = variant.get("moving_statistics")
    pad = int(variant.get("reflect_pad", PAD))  # type: ignore[call-overload]
    nodes: list = []
    inits: list = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs: object) -> str:
        out = f"{name}_output"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def w(name: str) -> np.ndarray:
        return np.asarray(weights[name], np.float32)

    def conv(x: str, scope: str, k: int, stride: int = 1, dilation: int = 1, bias: bool = False,
             scale: float = 1.0, name: str | None = None) -> str:  # fmt: skip
        kernel = w(f"{scope}/weights").transpose(3, 2, 0, 1) * np.float32(scale)
        inputs = [x, const(f"{scope}.weight", kernel)]
        if bias:
            inputs.append(const(f"{scope}.bias", w(f"{scope}/biases")))
        attrs: dict[str, object] = {"kernel_shape": [k, k], "strides": [stride, stride]}
        if dilation > 1:
            attrs["dilations"] = [dilation, dilation]
        if stride > 1 and k > 1 and same == "SAME_UPPER":
            attrs["auto_pad"] = "SAME_UPPER"
        else:  # stride 1 (or a 1×1 kernel): SAME is symmetric
            half = (k - 1) * dilation // 2
            attrs["pads"] = [half] * 4
        return node("Conv", inputs, name or f"/{scope}/Conv", **attrs)

    def batch_norm(x: str, scope: str, relu: bool) -> str:
        gamma, beta = w(f"{scope}/gamma"), w(f"{scope}/beta")
        if moving is not None:  # a deliberately wrong graph: folded stored statistics
            mean, var = moving[scope]  # type: ignore[index]
            scale = gamma / np.sqrt(np.asarray(var, np.float32) + BN_EPS)
            shift = beta - np.asarray(mean, np.float32) * scale
            y = node("Mul", [x, const(f"{scope}.scale", scale.reshape(1, -1, 1, 1))],
                     f"/{scope}/Mul")  # fmt: skip
            y = node("Add", [y, const(f"{scope}.shift", shift.reshape(1, -1, 1, 1))],
                     f"/{scope}/Add")  # fmt: skip
        else:
            y = node(
                "InstanceNormalization",
                [x, const(f"{scope}.gamma", gamma), const(f"{scope}.beta", beta)],
                f"/{scope}/Norm",
                epsilon=BN_EPS,
            )
        return node("Relu", [y], f"/{scope}/Relu") if relu else y

    # input: N×H×W×3 uint8 RGB → N×3×H×W BGR minus the mean, reflect-padded
    x = node("Cast", [INPUT_NAME], "/input/Cast", to=TensorProto.FLOAT)
    x = node("Transpose", [x], "/input/Transpose", perm=[0, 3, 1, 2])
    x = node("Gather", [x, const("bgr", np.array([2, 1, 0], np.int64))], "/input/BGR", axis=1)
    x = node("Sub", [x, const("mean", np.array(MEAN_BGR, np.float32).reshape(1, 3, 1, 1))],
             "/input/Sub")  # fmt: skip
    if pad:
        pads = const("pads", np.array([0, 0, pad, pad, 0, 0, pad, pad], np.int64))
        x = node("Pad", [x, pads], "/input/Pad", mode="reflect")
    image = x
    x = conv(x, "conv1", 7, stride=2)
    x = batch_norm(x, "bn_conv1", relu=True)
    pool_pad = {"auto_pad": "SAME_UPPER"} if same == "SAME_UPPER" else {"pads": [1] * 4}
    x = node("MaxPool", [x], "/pool1/MaxPool", kernel_shape=[3, 3], strides=[2, 2], **pool_pad)
    taps = {"input": image, "pool1": x}
    for b in blocks():
        y = conv(x, f"{b.name}_branch2a", 1, stride=b.stride)
        y = batch_norm(y, f"{b.bn}_branch2a", relu=True)
        y = conv(y, f"{b.name}_branch2b", 3, dilation=b.dilation)
        y = batch_norm(y, f"{b.bn}_branch2b", relu=True)
        y = conv(y, f"{b.name}_branch2c", 1)
        y = batch_norm(y, f"{b.bn}_branch2c", relu=False)
        if b.projection:
            s = conv(x, f"{b.name}_branch1", 1, stride=b.stride)
            s = batch_norm(s, f"{b.bn}_branch1", relu=False)
        else:
            s = x
        total = node("Add", [s, y], f"/{b.name}/Add")
        taps[b.name] = total
        x = taps[f"{b.name}_relu"] = node("Relu", [total], f"/{b.name}/Relu")

    # the head: taps → convs → resize to the padded size → concat → ReLU → dense layers
    size = node("Shape", [image], "/head/Shape", start=2)
    parts = []
    for name, layer, k, _, _ in TAPS:
        scale = 1.0 / INPUT_SCALE if layer == "input" else 1.0
        scope = f"hypercolumn_layers/{name}"
        t = conv(taps[layer], scope, k, bias=True, scale=scale, name=f"/{name}/Conv")
        if layer != "input":
            lead = node("Shape", [t], f"/{name}/ShapeNC", end=2)
            sizes = node("Concat", [lead, size], f"/{name}/Sizes", axis=0)
            t = node("Resize", [t, "", "", sizes], f"/{name}/Resize", mode="linear",
                     coordinate_transformation_mode=resize_mode)  # fmt: skip
        parts.append(t)
    x = node("Concat", parts, "/head/Concat", axis=1)
    x = node("Relu", [x], "/head/Relu")

    def dense(x: str, name: str, matrix: np.ndarray, bias: np.ndarray | None = None) -> str:
        inputs = [x, const(f"{name}.weight", matrix.T.reshape(*matrix.T.shape, 1, 1))]
        if bias is not None:
            inputs.append(const(f"{name}.bias", bias))
        return node("Conv", inputs, f"/{name}/Conv", kernel_shape=[1, 1])

    acts = []
    for layer in ("fc1_matting", "fc2_matting"):
        scope = f"{layer}/linear"
        x = dense(x, f"{layer}/a", w(f"{scope}/fc_weights1"))
        x = dense(x, f"{layer}/b", w(f"{scope}/fc_weights2"), w(f"{scope}/biases"))
        x = node("Relu", [x], f"/{layer}/Relu")
        acts.append(x)
    x = node("Concat", acts, "/fc3_matting/Concat", axis=1)
    x = dense(x, "fc3_matting", w("fc3_matting/linear/fc_weights1"),
              w("fc3_matting/linear/fc_biases"))  # fmt: skip
    if pad:  # crop the padding off
        starts = const("crop_starts", np.array([pad, pad], np.int64))
        ends = const("crop_ends", np.array([-pad, -pad], np.int64))
        axes = const("crop_axes", np.array([2, 3], np.int64))
        x = node("Slice", [x, starts, ends, axes], "/output/Crop")
    nodes.append(helper.make_node("Identity", [x], [OUTPUT_NAME], name="/output/Identity"))
    graph = helper.make_graph(
        nodes,
        "sss_rt_authors",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [1, "height", "width", 3])],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, [1, FEATURE_DIM, "height", "width"]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def crop_pad(model: Any) -> int:
    """The reflect padding a graph built by :func:`build_onnx` crops off (0: none)."""
    from onnx import numpy_helper

    from sss_rt.model_info import initializers

    crop = [n for n in model.graph.node if n.name == "/output/Crop"]
    if not crop:
        return 0
    return int(numpy_helper.to_array(initializers(model)[crop[0].input[1]])[0])


def random_weights(seed: int = 0, moving_statistics: bool = False) -> dict[str, np.ndarray]:
    """Seeded random weights for every variable of :func:`variable_spec` (float32), the same
    on every machine: each tensor from its own generator (seed, CRC-32 of its name). Kernels
    and dense matrices are He-scaled normals, gammas 1 + 0.1·N — 0.3·(1 + 0.1·N) for the last
    batch norm of each residual branch, small as in trained ResNets (with 1, float32 rounding
    grows through the 33 blocks until two fp32 engines differ by ~1e-3 mean; with 0.3 by
    ~2e-5) — betas and biases 0.1·N.
    ``moving_statistics`` adds each batch norm's (unused) moving mean and variance.

    For tests and benchmarks without the authors' real weights.
    """
    import zlib

    spec = dict(variable_spec())
    if moving_statistics:
        for bn in batch_norms():
            spec[f"{bn}/moving_mean"] = spec[f"{bn}/moving_variance"] = spec[f"{bn}/gamma"]
    out = {}
    for name, shape in spec.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        z = rng.standard_normal(shape, dtype=np.float32)
        leaf = name.rsplit("/", 1)[1]
        if leaf == "gamma":
            value = (0.3 if "branch2c" in name else 1.0) * (1.0 + 0.1 * z)
        elif leaf == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        elif len(shape) == 1:  # beta, biases, moving_mean
            value = 0.1 * z
        else:
            value = z * np.float32(np.sqrt(2.0 / np.prod(shape[:-1])))
        out[name] = np.asarray(value, np.float32)
    return out
