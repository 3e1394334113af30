"""A static check of an ONNX graph against the documented rules of TensorRT's ONNX parser.

TensorRT is not installable everywhere this project is built, so exported graphs are checked
here against what its parser accepts (TensorRT 10.x, ``onnx-tensorrt`` operator support):

- UINT8 only as a network input or output, and a UINT8 input must feed ``Cast`` nodes only
  ("TensorRT does not support UINT8 types for intermediate tensors");
- every operator in the parser's supported list (the subset this project can emit, plus the
  common neighbours a modified graph may bring), from the default ONNX domain;
- ``Resize``: mode nearest / linear / cubic, a coordinate transformation the parser implements;
- opset 9 to 22 (the range TensorRT 10 parses).

``problems(model)`` lists each violation in one line; an empty list means the graph passes.
"""

from __future__ import annotations

from typing import Any

UINT8 = 2  # onnx.TensorProto.UINT8
SUPPORTED_OPS = frozenset(
    [
        "Abs",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "Ceil",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Div",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gemm",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "HardSigmoid",
        "Identity",
        "InstanceNormalization",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "Min",
        "Mod",
        "Mul",
        "Neg",
        "Not",
        "Or",
        "Pad",
        "Pow",
        "PRelu",
        "Range",
        "Reciprocal",
        "ReduceL2",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Resize",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "Shape",
        "Sigmoid",
        "Sign",
        "Sin",
        "Slice",
        "Softmax",
        "Softplus",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tanh",
        "Tile",
        "TopK",
        "Transpose",
        "Unsqueeze",
        "Where",
        "Xor",
    ]
)
RESIZE_MODES = frozenset({"nearest", "linear", "cubic"})
RESIZE_COORDINATES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"}
)
OPSETS = range(9, 23)


def _attr(node: Any, name: str, default: str) -> str:
    for a in node.attribute:
        if a.name == name:
            return a.s.decode()
    return default


def problems(model: Any) -> list[str]:
    """Violations of the parser's rules in an ``onnx.ModelProto`` (empty: it would parse)."""
    graph = model.graph
    out: list[str] = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version not in OPSETS:
            out.append(f"opset {imp.version}: TensorRT 10 parses opsets {OPSETS[0]}–{OPSETS[-1]}")
    inputs = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    outputs = {o.name for o in graph.output}
    for name, elem in inputs.items():
        if elem != UINT8:
            continue
        for node in graph.node:
            if name in node.input and node.op_type != "Cast":
                out.append(
                    f"uint8 input {name!r} feeds {node.op_type} {node.name!r}: a uint8 input "
                    "may only feed a Cast"
                )
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            out.append(f"{node.op_type} {node.name!r}: operator domain {node.domain!r}")
        elif node.op_type not in SUPPORTED_OPS:
            out.append(f"{node.op_type} {node.name!r}: not in TensorRT's supported operators")
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to == UINT8 and not set(node.output) & outputs:
                out.append(f"Cast {node.name!r} makes an intermediate uint8 tensor")
        if node.op_type == "Resize":
            mode = _attr(node, "mode", "nearest")
            coords = _attr(node, "coordinate_transformation_mode", "half_pixel")
            if mode not in RESIZE_MODES:
                out.append(f"Resize {node.name!r}: mode {mode!r}")
            if coords not in RESIZE_COORDINATES:
                out.append(f"Resize {node.name!r}: coordinate_transformation_mode {coords!r}")
    return out


def cast_input_first(model: Any) -> int:
    """Rewrite ``uint8 input → Transpose → Cast`` as ``input → Cast → Transpose`` (the same
    values; TensorRT then sees no uint8 intermediate). Returns the number of rewrites."""
    graph = model.graph
    uint8_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == UINT8}
    done = 0
    for transpose in list(graph.node):
        if transpose.op_type != "Transpose" or transpose.input[0] not in uint8_inputs:
            continue
        consumers = [n for n in graph.node if transpose.output[0] in n.input]
        if not consumers or any(n.op_type != "Cast" for n in consumers):
            continue
        cast = consumers[0]
        cast_out = cast.output[0]
        for other in consumers[1:]:  # identical casts of the transposed input: one is enough
            for n in graph.node:
                for i, name in enumerate(n.input):
                    if name == other.output[0]:
                        n.input[i] = cast_out
            graph.node.remove(other)
        # input → Cast (new name) → Transpose (writes the cast's old output name)
        source = transpose.input[0]
        cast_name = f"{source}_as_float"
        cast.input[0] = source
        cast.output[0] = cast_name
        transpose.input[0] = cast_name
        transpose.output[0] = cast_out
        graph.node.remove(cast)
        graph.node.insert(list(graph.node).index(transpose), cast)
        done += 1
    return done
