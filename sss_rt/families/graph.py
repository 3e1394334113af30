"""ONNX graph surgery the families' splits share."""

from __future__ import annotations

from typing import Any


def cut(model: Any, outputs: list[str]) -> Any:
    """A copy of ``model`` computing only ``outputs`` (float32, any shape)."""
    import onnx

    producers = {out: n for n in model.graph.node for out in n.output}
    needed, keep, stack = set(), set(), list(outputs)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producers.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            stack.extend(i for i in node.input if i)
    graph = onnx.helper.make_graph(
        [n for n in model.graph.node if id(n) in keep],
        model.graph.name + "_trunk",
        list(model.graph.input),
        [onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs],
        [t for t in model.graph.initializer if t.name in needed],
    )
    trunk = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    trunk.ir_version = model.ir_version
    return trunk
