"""Large images in bounded memory: the network's low-resolution trunk once, its full-resolution
head and the post-processing in bands of rows.

The exported graph is cut where its tensors are still small: the input tap after its 3×3 conv
(4 channels, full resolution), the pool1 tap (124 channels, 1/4 resolution) and the sum of the
deep taps' 512-channel projections (1/8 resolution). The rest — the pool1 projection, the
bilinear upsampling (ONNX ``Resize``, half-pixel centres, edge clamping), the fuse bias, ReLU and
the 512→128 conv — is computed here, band by band, on demand. Nothing but the rounding order
differs from the untiled graph.

The exact post-processing then streams bands twice: once to accumulate the covariance of the
filtered channels, once to filter the three projected channels. Each band is computed with a
halo of 2r rows, which makes its guided filter exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from sss_rt.errors import ModelError
from sss_rt.model_info import INPUT_NAME, initializers
from sss_rt.postprocess import native
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.cpu import (
    MomentAccumulator,
    image_to_guide,
    project_raw,
    rough_mean,
    to_unit_embedding,
)
from sss_rt.postprocess.pca import PCABasis

T_IN = "/fuse_input/Conv"  # its input: the input tap after conv + ReLU
T_P1 = "/fuse_pool1/Conv"  # its input: the pool1 tap after conv + ReLU
DEEP = "/fuse_deep/Conv"  # its output: the deep taps' projection (1/8 resolution)
HEAD = "/head/Conv"


@dataclass(frozen=True)
class HeadWeights:
    """The full-resolution part of the inference form, as matrices."""

    fuse_input: np.ndarray  # (512, 4)
    fuse_pool1: np.ndarray  # (512, 124)
    fuse_bias: np.ndarray  # (512,) the fuse conv's bias (plus the pool1/deep convs' own, if any)
    head: np.ndarray  # (128, 512)
    head_bias: np.ndarray  # (128,)


def split_model(path: str | os.PathLike[str]) -> tuple[bytes, HeadWeights]:
    """The trunk graph (serialized) and the head's weights of an sss-rt ONNX model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.fspath(path))
    nodes = {n.name: n for n in model.graph.node}
    if not all(name in nodes for name in (T_IN, T_P1, DEEP, HEAD)):
        raise ModelError(f"{path}: not an sss-rt inference-form graph; it cannot be tiled")
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
        raise ModelError(f"{path}: the fuse bias was not found; the graph cannot be tiled")
    bias = consts[0].reshape(-1).copy()
    for extra in (b_in, b_p1):
        if extra is not None:
            bias = bias + extra
    if head_bias is None:
        head_bias = np.zeros(head.shape[0], np.float32)
    # the deep projection's own bias, if any, is inside the trunk output
    outputs = [nodes[T_IN].input[0], nodes[T_P1].input[0], nodes[DEEP].output[0]]
    trunk = _cut(model, outputs)
    weights = HeadWeights(fuse_in, fuse_p1, bias.astype(np.float32), head, head_bias)
    return trunk.SerializeToString(), weights


def _cut(model: Any, outputs: list[str]) -> Any:
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


class TiledNetwork:
    """Runs an sss-rt ONNX model as trunk (ONNX Runtime, whole image) + head (bands of rows)."""

    def __init__(self, model: str | os.PathLike[str], threads: int | None = None):
        import onnxruntime as ort

        trunk, self.weights = split_model(model)
        self.threads = threads
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        self._session = ort.InferenceSession(trunk, options, providers=["CPUExecutionProvider"])
        self.feature_dim = self.weights.head.shape[0]

    def trunk(self, image: np.ndarray) -> Trunk:
        """Run the low-resolution part on one H×W×3 uint8 image."""
        t_in, t_p1, deep = self._session.run(None, {INPUT_NAME: np.ascontiguousarray(image[None])})
        return Trunk(self.weights, t_in[0], t_p1[0], deep[0], self.threads)

    def close(self) -> None:
        self._session = None  # type: ignore[assignment]


class Trunk:
    """The trunk's outputs for one image; ``rows(y0, y1)`` computes features of those rows."""

    def __init__(
        self,
        w: HeadWeights,
        t_in: np.ndarray,
        t_p1: np.ndarray,
        deep: np.ndarray,
        threads: int | None = None,
    ):
        self.w = w
        self.t_in = np.ascontiguousarray(t_in, dtype=np.float32)
        self.t_p1, self.deep = t_p1, deep
        self.threads = threads
        _, self.height, self.width = t_in.shape
        self._y_p1 = native.linear_taps(self.height, t_p1.shape[1])
        self._y_deep = native.linear_taps(self.height, deep.shape[1])
        self._x_p1 = native.int32_taps(native.linear_taps(self.width, t_p1.shape[2]))
        self._x_deep = native.int32_taps(native.linear_taps(self.width, deep.shape[2]))

    def _block(self, low: np.ndarray, ys, xs, y0: int, y1: int, project=None) -> tuple:
        """The low-resolution rows that output rows ``y0:y1`` need, with their taps."""
        i0, i1, wy = (a[y0:y1] for a in ys)
        lo, hi = int(i0.min()), int(i1.max()) + 1
        block = low[:, lo:hi]
        if project is not None:
            c, bh, bw = block.shape
            block = (project @ block.reshape(c, bh * bw)).reshape(-1, bh, bw)
        block = np.ascontiguousarray(block, dtype=np.float32)
        return (block, *native.int32_taps((i0 - lo, i1 - lo, wy)), *xs)

    def rows(
        self,
        y0: int,
        y1: int,
        chunk_mb: int = 64,
        project: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Features of rows ``y0:y1``: C×(y1−y0)×W float32.

        ``project=(V, s)``: return ``V·(features − s)`` instead (k×(y1−y0)×W), with V folded
        into the last conv and the products in float64 (see ``cpu.project_raw``).
        The 512-channel intermediate is computed ``chunk_mb`` at a time.
        """
        w = self.w
        width = self.width
        if project is not None:
            v, shift = project
            head = v @ w.head.astype(np.float64)  # k × 512
            bias = v @ (w.head_bias.astype(np.float64) - shift)
            zero = np.zeros(head.shape[1])
        else:
            head, bias = w.head, w.head_bias
        out = np.empty((head.shape[0], y1 - y0, width), np.float32)
        step = max(1, (chunk_mb << 20) // (w.head.shape[1] * width * 4))
        buf = np.empty(w.head.shape[1] * min(step, y1 - y0) * width, np.float32)
        for a in range(y0, y1, step):
            b = min(y1, a + step)
            hidden = self._hidden(a, b, buf[: w.head.shape[1] * (b - a) * width])
            if project is not None:  # float64 sums, as cpu.project_raw
                res = native.project(hidden, head, zero, self.threads).reshape(len(head), -1)
            else:
                res = head @ hidden.reshape(w.head.shape[1], -1)
            res += bias[:, None].astype(res.dtype)
            out[:, a - y0 : b - y0] = res.reshape(-1, b - a, width)
        return out

    def _hidden(self, y0: int, y1: int, buf: np.ndarray | None = None) -> np.ndarray:
        """ReLU(fuse) of rows ``y0:y1``, the 512-channel input of the last conv (compiled);
        ``buf``: flat float32 storage to reuse."""
        w = self.w
        ups = (
            self._block(self.t_p1, self._y_p1, self._x_p1, y0, y1, w.fuse_pool1),
            self._block(self.deep, self._y_deep, self._x_deep, y0, y1),
        )
        out = None if buf is None else buf.reshape(len(w.fuse_bias), y1 - y0, self.width)
        return native.hidden_rows(
            self.t_in, w.fuse_input, w.fuse_bias, ups, y0, y1 - y0, self.threads, out
        )


def band_rows(width: int, channels: int, band_mb: int, halo: int) -> int:
    """Rows per band: ``band_mb`` of features, and at least 4 halos (bounds the recomputation)."""
    return max(4 * halo, 8, (band_mb << 20) // max(1, channels * width * 4))


def band_guide(
    image: np.ndarray, b0: int, b1: int, radius: int, eps: float, threads: int | None = None
) -> Any:
    """Guide statistics of rows ``b0:b1``, exactly as for the whole image.

    They are computed on the rows ``b0 − r : b1 + r`` and cropped: a row's statistics only
    depend on the guide rows within r, and the window counts N(x) are only wrong within r of
    the slice's own edges.
    """
    h = image.shape[0]
    s0, s1 = max(0, b0 - radius), min(h, b1 + radius)
    tables = native.PackedGuide.compute(image_to_guide(image[s0:s1]), radius, eps, threads)
    return tables.rows(b0 - s0, b1 - s0)


#: features up to this size are kept between the two passes instead of being recomputed
KEEP_FEATURES_MB = 1024


def postprocess_streaming(
    trunk: Trunk, image: np.ndarray, config: PostprocessConfig, keep_features: bool | None = None
) -> tuple[np.ndarray, PCABasis, np.ndarray | None]:
    """Exact post-processing of features computed band by band (two passes, bounded memory).

    ``keep_features``: hold all features (C×H×W float32) after the first pass — the second pass
    then reads them instead of recomputing them, and they are returned; default: when they take
    at most ``KEEP_FEATURES_MB``.
    """
    if config.mode != "exact":
        raise ValueError("tiled extraction supports the exact post-processing mode only")
    h, w = trunk.height, trunk.width
    r = config.radius
    halo = 2 * r
    c = trunk.w.head.shape[0]
    rows = band_rows(w, c, config.band_mb, halo)
    if keep_features is None:
        keep_features = c * h * w * 4 <= KEEP_FEATURES_MB << 20
    kept = np.empty((c, h, w), np.float32) if keep_features else None

    def bands():
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            b0, b1 = max(0, y0 - halo), min(h, y1 + halo)
            yield y0, y1, b0, b1, band_guide(image, b0, b1, r, config.eps, config.threads)

    # pass 1: covariance of the filtered channels (shifted by the first band's mean)
    acc: MomentAccumulator | None = None
    for y0, y1, b0, b1, sub in bands():
        feats = trunk.rows(b0, b1)
        if kept is not None:
            kept[:, y0:y1] = feats[:, y0 - b0 : y1 - b0]
        if acc is None:
            acc = MomentAccumulator(rough_mean(feats))
        with native.RowFilter(sub, config.threads) as rf:
            out = rf.filter(feats, y0 - b0, y1 - b0)
        acc.add_columns(out.reshape(out.shape[0], -1), config.threads)
    assert acc is not None
    basis = acc.basis(config.n_components)
    shift = acc.shift
    comps = basis.components
    # pass 2: filter the features projected on the basis
    projected = np.empty((comps.shape[0], h, w), np.float32)
    for y0, y1, b0, b1, sub in bands():
        if kept is not None:
            proj = project_raw(np.ascontiguousarray(kept[:, b0:b1]), basis, shift, config.threads)
        else:  # the projection folded into the last conv: no 128-channel features
            proj = trunk.rows(b0, b1, project=(comps, shift))
        with native.RowFilter(sub, config.threads) as rf:
            projected[:, y0:y1] = rf.filter(proj, y0 - b0, y1 - b0)
    flat = projected.reshape(comps.shape[0], -1).T
    flat -= (comps @ (basis.mean - shift)).astype(np.float32)
    return to_unit_embedding(flat, basis, (h, w)), basis, kept
