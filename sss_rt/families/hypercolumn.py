"""The seed's hypercolumn network as a family: its graph cut for split execution and its
PyTorch module rebuilt from an ONNX model.

The cut is where the graph's tensors are still small (see ``sss_rt.head``): the inputs of the
input tap's and pool1 tap's fuse convs, and the output of the deep taps' fuse conv. The head's
weights (the two per-tap fuse projections at full resolution, the fuse bias and the last conv)
are read from the initializers.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sss_rt.errors import ModelError
from sss_rt.families.graph import cut
from sss_rt.head import HeadWeights
from sss_rt.model_info import ModelInfo, initializers, read_model_info

T_IN = "/fuse_input/Conv"  # its input: the input tap after conv + ReLU
T_P1 = "/fuse_pool1/Conv"  # its input: the pool1 tap after conv + ReLU
DEEP = "/fuse_deep/Conv"  # its output: the deep taps' projection (1/8 resolution)
HEAD = "/head/Conv"


def can_split(model: Any) -> bool:
    """Whether a loaded ONNX model is an sss-rt inference-form graph that can be cut."""
    names = {n.name for n in model.graph.node}
    return all(name in names for name in (T_IN, T_P1, DEEP, HEAD))


def split_model(model: Any, path: str | os.PathLike[str] = "model") -> tuple[bytes, HeadWeights]:
    """The trunk graph (serialized) and the head's weights of a loaded sss-rt ONNX model."""
    from onnx import numpy_helper

    if not can_split(model):
        raise ModelError(f"{path}: not an sss-rt inference-form graph; it cannot be split")
    nodes = {n.name: n for n in model.graph.node}
    w = {k: numpy_helper.to_array(v).astype(np.float32) for k, v in initializers(model).items()}

    def conv(name: str) -> tuple[np.ndarray, np.ndarray | None]:
        node = nodes[name]
        weight = w[node.input[1]]
        bias = w[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        return weight.reshape(weight.shape[0], weight.shape[1]), bias

    fuse_in, b_in = conv(T_IN)
    fuse_p1, b_p1 = conv(T_P1)
    head, head_bias = conv(HEAD)
    # the fuse bias: the constant of the Add that feeds the ReLU before the head conv
    producers = {out: n for n in model.graph.node for out in n.output}
    relu = producers.get(nodes[HEAD].input[0])
    add = producers.get(relu.input[0]) if relu is not None and relu.op_type == "Relu" else None
    consts = [w[i] for i in add.input if i in w] if add is not None and add.op_type == "Add" else []
    if len(consts) != 1 or consts[0].size != fuse_in.shape[0]:
        raise ModelError(f"{path}: the fuse bias was not found; the graph cannot be split")
    bias = consts[0].reshape(-1).copy()
    for extra in (b_in, b_p1):
        if extra is not None:
            bias = bias + extra
    if head_bias is None:
        head_bias = np.zeros(head.shape[0], np.float32)
    # the deep projection's own bias, if any, is inside the trunk output
    outputs = [nodes[T_IN].input[0], nodes[T_P1].input[0], nodes[DEEP].output[0]]
    trunk = split_deep_concat(cut(model, outputs))
    weights = HeadWeights(fuse_in, fuse_p1, bias.astype(np.float32), head, head_bias)
    return trunk.SerializeToString(), weights


def split_deep_concat(model: Any) -> Any:
    """The deep taps' projection as a sum of one 1×1 conv per tap instead of a conv of their
    concatenation (the same sum; rounding order aside), each conv placed right after its tap.

    The concatenation held all three taps at once (896 channels at 1/8 resolution, 1.3 GB at
    24 MP) while the pool1 and input taps were also alive; per-tap convs let each tap go as soon
    as it is projected. A graph of another shape is returned unchanged.
    """
    from onnx import helper, numpy_helper

    nodes = list(model.graph.node)
    by_name = {n.name: n for n in nodes}
    producers = {out: n for n in nodes for out in n.output}
    deep = by_name.get(DEEP)
    concat = producers.get(deep.input[0]) if deep is not None else None
    if concat is None or concat.op_type != "Concat" or len(concat.input) < 2:
        return model
    consumers = [n for n in nodes if concat.output[0] in n.input]
    if len(consumers) != 1:
        return model
    inits = initializers(model)
    weight = numpy_helper.to_array(inits[deep.input[1]]).astype(np.float32)
    bias = deep.input[2] if len(deep.input) > 2 and deep.input[2] else None
    widths = []
    for name in concat.input:  # each input: Relu(Conv(...)), the conv's weight gives its width
        relu = producers.get(name)
        conv = producers.get(relu.input[0]) if relu is not None else None
        if conv is None or conv.op_type != "Conv" or conv.input[1] not in inits:
            return model
        widths.append(int(inits[conv.input[1]].dims[0]))
    if sum(widths) != weight.shape[1]:
        return model
    new_inits, adds, start = [], [], 0
    placed: dict[str, list[Any]] = {}
    for i, (name, width) in enumerate(zip(concat.input, widths, strict=True)):
        w_name = f"{DEEP}/part{i}.weight"
        new_inits.append(numpy_helper.from_array(weight[:, start : start + width].copy(), w_name))
        start += width
        inputs = [name, w_name] + ([bias] if bias and i == 0 else [])
        out = f"{DEEP}/part{i}"
        conv = helper.make_node("Conv", inputs, [out], name=out)
        conv.attribute.extend(deep.attribute)
        placed.setdefault(producers[name].name, []).append(conv)
        adds.append(out)
    total = adds[0]
    sums = []
    for i, part in enumerate(adds[1:], 1):
        name = deep.output[0] if i == len(adds) - 1 else f"{DEEP}/sum{i}"
        sums.append(helper.make_node("Add", [total, part], [name], name=f"{DEEP}/Add{i}"))
        total = name
    order = []
    for n in nodes:
        if n is concat or n is deep:
            continue
        order.append(n)
        order.extend(placed.get(n.name, []))
        if placed.get(n.name) and n.name == producers[concat.input[-1]].name:
            order.extend(sums)
    graph = helper.make_graph(
        order,
        model.graph.name,
        list(model.graph.input),
        list(model.graph.output),
        list(model.graph.initializer) + new_inits,
    )
    out_model = helper.make_model(graph, opset_imports=model.opset_import)
    out_model.ir_version = model.ir_version
    return out_model


def inference_net_from_onnx(path: str | os.PathLike[str]) -> tuple[Any, ModelInfo]:
    """Rebuild the inference-form module from the weights stored in an sss-rt ONNX model."""
    import onnx
    import torch
    from onnx import numpy_helper

    from sss_rt.export.inference_form import InferenceNet
    from sss_rt.network.model import HypercolumnNet, Normalize

    info = read_model_info(path)
    model = onnx.load(os.fspath(path))
    inits = initializers(model)
    net = InferenceNet(HypercolumnNet(info.backbone))
    net.normalize = Normalize(tuple(info.mean), tuple(info.std))
    expected = net.state_dict()
    found: dict[str, Any] = {}
    # Conv weights keep their parameter names; a bias is taken from the Conv node that uses the
    # named weight, whatever the bias tensor is called.
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in expected:
            continue
        prefix = node.input[1][: -len(".weight")]
        found[node.input[1]] = inits[node.input[1]]
        if len(node.input) > 2 and node.input[2]:
            found[prefix + ".bias"] = inits[node.input[2]]
    for key in expected:
        if key not in found and key in inits:
            found[key] = inits[key]
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ModelError(f"{path}: cannot map ONNX weights to the network (missing {missing[:3]})")
    state = {
        k: torch.from_numpy(numpy_helper.to_array(v).astype(np.float32)) for k, v in found.items()
    }
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: ONNX weights do not fit the network ({exc})") from None
    return net.eval(), info
