"""The authors' network in split execution: the backbone once, the head in bands on the host.

The trunk (ONNX Runtime or OpenVINO) runs the backbone on the whole padded image — its batch
norm uses the image's own statistics, so it cannot be cut into tiles — and stops at the five
taps after their convolutions (:data:`~sss_rt.families.authors_graph.TAP_OUTPUTS`): the input
tap at full resolution (4 channels), pool1's at 1/4 (124), res3/res4/res5's at 1/8 (128, 256,
512). :class:`AuthorsHeadSource` computes the full-resolution head for any band of output rows:
the taps resized with TensorFlow 1's rule (:func:`sss_rt.resample.asymmetric_taps`) to the
padded size, at the band's padded coordinates only (the reflect padding's rows and columns are
never computed), ReLU, and the dense layers as BLAS GEMMs, a chunk of pixels at a time. The
last layer takes the post-processing's projection folded in (float64 weights and sums), so the
exact mode's second pass never forms 128 channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sss_rt import blas, native
from sss_rt.bands import ComputedSource
from sss_rt.errors import ModelError
from sss_rt.families.authors_graph import PAD, TAP_OUTPUTS, crop_pad
from sss_rt.model_info import initializers
from sss_rt.resample import asymmetric_taps, int32_taps


@dataclass(frozen=True)
class AuthorsHeadWeights:
    """The dense layers as out×in float32 matrices: fc1 = ReLU(B₁A₁x + b₁), fc2 = ReLU(B₂A₂·fc1
    + b₂), out = W₃[fc1; fc2] + b₃."""

    a1: np.ndarray  # (256, 1024)
    b1: np.ndarray  # (512, 256)
    bias1: np.ndarray  # (512,)
    a2: np.ndarray  # (256, 512)
    b2: np.ndarray  # (512, 256)
    bias2: np.ndarray  # (512,)
    w3: np.ndarray  # (128, 1024)
    bias3: np.ndarray  # (128,)
    pad: int = PAD

    @classmethod
    def from_arrays(cls, get: Callable[[str], np.ndarray], pad: int) -> AuthorsHeadWeights:
        """From the graph's weights by name (``get``: an ONNX initializer or a module's
        parameter as an array; 1×1 conv kernels become matrices)."""

        def matrix(name: str) -> np.ndarray:
            a = np.asarray(get(name), np.float32)
            return np.ascontiguousarray(a.reshape(a.shape[0], -1) if a.ndim == 4 else a)

        names = ("fc1_matting/a.weight", "fc1_matting/b.weight", "fc1_matting/b.bias",
                 "fc2_matting/a.weight", "fc2_matting/b.weight", "fc2_matting/b.bias",
                 "fc3_matting.weight", "fc3_matting.bias")  # fmt: skip
        return cls(*(matrix(n) for n in names), pad=pad)

    @classmethod
    def from_onnx(cls, model: Any, path: str) -> AuthorsHeadWeights:
        from onnx import numpy_helper

        inits = initializers(model)

        def get(name: str) -> np.ndarray:
            if name not in inits:
                raise ModelError(f"{path}: no {name} in the authors' graph; it cannot be split")
            return numpy_helper.to_array(inits[name])

        return cls.from_arrays(get, crop_pad(model))


#: the dense layers fc1 and fc2 as a graph of their own (``dense_graph``): its input, the
#: hidden layer (after the concatenation's ReLU), and its output, [fc1; fc2]
DENSE_INPUT = "/head/Relu_output"
DENSE_OUTPUT = "/fc3_matting/Concat_output"


def split_authors(model: Any, path: str) -> Any:
    """The authors' graph cut at its taps (a :class:`sss_rt.families.split.Split`), with its
    dense layers as a graph an engine can run (``dense_graph``)."""
    from sss_rt.families.graph import cut
    from sss_rt.families.split import Split

    produced = {out for n in model.graph.node for out in n.output}
    if not all(name in produced for name in (*TAP_OUTPUTS, DENSE_INPUT, DENSE_OUTPUT)):
        return None
    weights = AuthorsHeadWeights.from_onnx(model, path)
    trunk = cut(model, list(TAP_OUTPUTS)).SerializeToString()

    def source(
        outs: Sequence[np.ndarray],
        threads: int | None,
        head: str | None,
        dense: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> Any:
        return AuthorsHeadSource(weights, outs, threads, dense)

    return Split(trunk, source, dense_graph(model))


def dense_graph(model: Any) -> bytes:
    """fc1 and fc2 as an ONNX graph: the hidden layer (:data:`DENSE_INPUT`, 1×1024×1×N
    float32) in, [fc1; fc2] (:data:`DENSE_OUTPUT`, 1×1024×1×N) out — 83% of the head's
    multiply-adds, for an engine to run (OpenVINO: in bf16 where the CPU has a bf16 unit)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [n for n in model.graph.node if n.name.startswith(("/fc1_matting/", "/fc2_matting/"))]
    nodes += [n for n in model.graph.node if n.output[0] == DENSE_OUTPUT]
    used = {i for n in nodes for i in n.input}
    inits = [t for t in model.graph.initializer if t.name in used]
    width = sum(t.dims[0] for t in inits if t.name.endswith("/b.weight"))
    graph = helper.make_graph(
        [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes],
        "sss_rt_authors_dense",
        [helper.make_tensor_value_info(DENSE_INPUT, TensorProto.FLOAT, [1, None, 1, "n"])],
        [helper.make_tensor_value_info(DENSE_OUTPUT, TensorProto.FLOAT, [1, width, 1, "n"])],
        inits,
    )
    out = helper.make_model(graph, opset_imports=model.opset_import)
    out.ir_version = model.ir_version
    return out.SerializeToString()


class AuthorsHeadSource(ComputedSource):
    """One image's features from the authors' trunk outputs, any band on demand.

    ``taps``: the five tap outputs (C×h×w float32 each) in :data:`TAP_OUTPUTS` order; the
    first is at the padded image's size (H + 2·pad) × (W + 2·pad), which sets the output size
    H×W and every resize's target.
    """

    #: the 1024-channel hidden layer is formed this many MB at a time
    CHUNK_MB = 64

    def __init__(
        self,
        weights: AuthorsHeadWeights,
        taps: Sequence[np.ndarray],
        threads: int | None = None,
        dense: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        self.w = weights
        self.dense = dense
        self.taps = [np.asarray(t, np.float32) for t in taps]
        self.threads = threads
        _, padded_h, padded_w = self.taps[0].shape
        self.height, self.width = padded_h - 2 * weights.pad, padded_w - 2 * weights.pad
        self.channels = weights.w3.shape[0]
        self._hidden_channels = sum(t.shape[0] for t in self.taps)
        if self._hidden_channels != weights.a1.shape[1]:
            raise ModelError("the trunk's taps do not match the head's first layer")
        p = weights.pad
        self._ys = [asymmetric_taps(padded_h, t.shape[1], p, self.height) for t in self.taps[1:]]
        self._xs = [asymmetric_taps(padded_w, t.shape[2], p, self.width) for t in self.taps[1:]]

    def _compute(
        self, y0: int, y1: int, x0: int, x1: int, project: tuple[np.ndarray, np.ndarray] | None
    ) -> np.ndarray:
        w = self.w
        width = x1 - x0
        if project is not None:  # k×1024 float64 weights, as HeadSource._folded
            v, shift = project
            last = v @ w.w3.astype(np.float64)
            bias = v @ (w.bias3.astype(np.float64) - shift)
        else:
            last, bias = w.w3, w.bias3
        out = np.empty((last.shape[0], y1 - y0, width), np.float32)
        step = max(1, (self.CHUNK_MB << 20) // (self._hidden_channels * width * 4))
        for a in range(y0, y1, step):
            b = min(y1, a + step)
            both = self._dense(self._hidden(a, b, x0, x1))
            if project is not None and native.available():  # float64 sums
                res = native.project(both.reshape(len(both), 1, -1), last, np.zeros(len(both)),
                                     self.threads).reshape(len(last), -1)  # fmt: skip
            elif project is not None:
                res = blas.matmul(last, both.astype(np.float64), self.threads).astype(np.float32)
            else:
                res = blas.matmul(last, both, self.threads)
            res += bias[:, None].astype(res.dtype)
            out[:, a - y0 : b - y0] = res.reshape(-1, b - a, width)
        return out

    def _dense(self, x: np.ndarray) -> np.ndarray:
        """[fc1; fc2] (1024 × N float32) of the hidden layer x (1024 × N): on the backend's
        engine where it gave one (``dense``), else as BLAS GEMMs."""
        if self.dense is not None:
            return self.dense(x)
        w = self.w
        both = np.empty((len(w.bias1) + len(w.bias2), x.shape[1]), np.float32)
        h1, h2 = both[: len(w.bias1)], both[len(w.bias1) :]
        # in fixed column parts on sss-rt's threads (BLAS runs on one: sss_rt.blas)
        _relu_bias(blas.matmul(w.b1, blas.matmul(w.a1, x, self.threads), self.threads, h1), w.bias1)
        _relu_bias(
            blas.matmul(w.b2, blas.matmul(w.a2, h1, self.threads), self.threads, h2), w.bias2
        )
        return both

    def _hidden(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """ReLU of the concatenated, resized taps for output rows ``y0:y1``, columns
        ``x0:x1``: 1024 × (n·width) float32."""
        if native.available():
            return self._hidden_compiled(y0, y1, x0, x1)
        p, n, width = self.w.pad, y1 - y0, x1 - x0
        parts = [self.taps[0][:, y0 + p : y1 + p, x0 + p : x1 + p]]
        for tap, (yi0, yi1, wy), (xi0, xi1, wx) in zip(self.taps[1:], self._ys, self._xs,
                                                        strict=True):  # fmt: skip
            top, bottom = tap[:, yi0[y0:y1]], tap[:, yi1[y0:y1]]
            rows = top + (bottom - top) * wy[y0:y1, None]
            left, right = rows[:, :, xi0[x0:x1]], rows[:, :, xi1[x0:x1]]
            parts.append(left + (right - left) * wx[x0:x1])
        hidden = np.concatenate(parts).reshape(self._hidden_channels, n * width)
        return np.maximum(hidden, 0.0, out=hidden)

    def _hidden_compiled(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """:meth:`_hidden` by the compiled head kernel (``native.hidden_rows``: bilinear rows
        and columns, sum, ReLU in one pass, channels over threads), once per tap, each into
        its channel range of one buffer: the input tap as ReLU(I·t), each resized tap as
        ReLU(up(t) + up(0)) (the kernel sums two resized blocks; the second is a 1×1 zero)."""
        p, n, width = self.w.pad, y1 - y0, x1 - x0
        hidden = np.empty((self._hidden_channels, n, width), np.float32)
        first = self.taps[0]
        c0 = len(first)
        t_in = np.ascontiguousarray(first[:, y0 + p : y1 + p, x0 + p : x1 + p])
        zeros_y = (np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float32))
        zeros_x = (np.zeros(width, np.int32),) * 2 + (np.zeros(width, np.float32),)
        none = np.zeros((c0, 1, 1), np.float32)
        native.hidden_rows(t_in, np.eye(c0, dtype=np.float32), np.zeros(c0, np.float32),
                           ((none, *zeros_y, *zeros_x),) * 2, 0, n, self.threads,
                           hidden[:c0])  # fmt: skip
        one = np.zeros((1, n, width), np.float32)
        for tap, ys, xs in zip(self.taps[1:], self._ys, self._xs, strict=True):
            c = len(tap)
            i0, i1, wy = (a[y0:y1] for a in ys)
            lo, hi = int(i0.min()), int(i1.max()) + 1
            block = np.ascontiguousarray(tap[:, lo:hi])
            up = (block, *int32_taps((i0 - lo, i1 - lo, wy)),
                  *int32_taps(tuple(a[x0:x1] for a in xs)))  # fmt: skip
            zero = (np.zeros((c, 1, 1), np.float32), *zeros_y, *zeros_x)
            native.hidden_rows(one, np.zeros((c, 1), np.float32), np.zeros(c, np.float32),
                               (up, zero), 0, n, self.threads, hidden[c0 : c0 + c])  # fmt: skip
            c0 += c
        return hidden.reshape(self._hidden_channels, n * width)


def _relu_bias(x: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x += bias[:, None]
    return np.maximum(x, 0.0, out=x)
