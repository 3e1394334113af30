"""OpenVINO backend: the trunk on OpenVINO's CPU plugin (oneDNN: AMX and AVX-512 bf16/int8), the
head per band in the compiled kernels.

The engine for ``bf16`` and ``int8`` on the CPU, chosen by measurement (``benchmarks/
RESULTS-precision.md``, network at 1 MP on a Xeon with AMX, the same head: int8 here 0.64 s
against ONNX Runtime's int8 kernels 0.92 s on the same quantized graph; bf16 here 0.70 s,
against 2.93 s for ONNX Runtime's fp32 split path). ``bf16`` sets OpenVINO's inference
precision to bf16 and runs the head in the bf16 kernel, the input tap in fp32; ``int8`` runs
the quantized graph (its float layers in bf16 where the CPU has the units) with the same head;
``fp32`` runs everything in fp32. Split execution as in the ONNX Runtime backend; ``whole``
runs the whole graph in OpenVINO (the peer the split path is measured against).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from sss_rt.backends.base import Backend, check_image
from sss_rt.backends.onnx_graph import load_feature_model
from sss_rt.backends.support import check_support
from sss_rt.bands import ArraySource, FeatureSource
from sss_rt.device import Device
from sss_rt.errors import BackendUnavailableError, ModelError
from sss_rt.families import family_of
from sss_rt.families.graph import cut
from sss_rt.model_info import ModelInfo
from sss_rt.precision import bf16_unit, check_precision, head_variant

#: OpenVINO's inference precision for each of ours (int8 layers come from the quantized graph
#: itself; its float layers run in bf16 where the CPU has a bf16 unit)
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise BackendUnavailableError(
            "the openvino backend (bf16 and int8 on the CPU) needs OpenVINO: pip install openvino"
        ) from None
    return openvino


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(
        self,
        model: str | os.PathLike[str],
        device: str | Device = "auto",
        threads: int | None = None,
        execution: str = "split",
        precision: str = "bf16",
        engine_head: bool | None = None,
    ):
        ov = import_openvino()
        self.precision = check_precision(precision)
        check_support(self.name, device, precision, execution)
        if precision == "bf16" and bf16_unit() is None:
            raise BackendUnavailableError(
                "bf16 needs a CPU with AMX-BF16 or AVX512-BF16 and this one has neither; "
                "use --precision auto or fp32"
            )
        graph, path, props = load_feature_model(os.fspath(model), precision)
        self._info = ModelInfo.from_metadata(props)
        self._device = "cpu"
        self._path = path
        self.threads = threads
        self._core = ov.Core()
        self._config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": HINTS[precision] if bf16_unit() else "f32",
        }
        if threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._source: Any = None
        self._whole: Any = None
        self._trunk: Any = None
        self._input_tap: Any = None
        split = family_of(props).split(graph, path) if execution == "split" else None
        self._dense: Any = None
        if split is not None:
            trunk, self._source = split.trunk, split.source
            # a part of the head on OpenVINO too (``engine_head``; default: where it runs in
            # bf16 — in fp32 it measured slower than BLAS, 5.4 s vs 4.5 s at 640×480)
            bf16 = self._config["INFERENCE_PRECISION_HINT"] == "bf16"
            if split.dense_graph is not None and (bf16 if engine_head is None else engine_head):
                self._dense = _DenseRunner(self._compile(split.dense_graph))
            if self._config["INFERENCE_PRECISION_HINT"] == "bf16":
                # the input tap (a 3×3 conv of the image, 4 channels) in fp32: in bf16 it alone
                # raised the embedding's mean error from 0.0002 to 0.0025 (astronaut, 480×360)
                import onnx

                parts = onnx.load_from_string(trunk)
                names = [o.name for o in parts.graph.output]
                self._input_tap = self._compile(
                    cut(parts, names[:1]).SerializeToString(), {"INFERENCE_PRECISION_HINT": "f32"}
                )
                trunk = cut(parts, names[1:]).SerializeToString()
            self._trunk = self._compile(trunk)
        self._head = head_variant(precision)

    def _compile(self, model: str | bytes, config: dict[str, Any] | None = None) -> Any:
        try:
            if isinstance(model, bytes):
                read = self._core.read_model(model=model, weights=b"")
            else:
                read = self._core.read_model(model)
            config = {**self._config, **(config or {})}
            return self._core.compile_model(read, "CPU", config).create_infer_request()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"OpenVINO cannot load {self._path}: {first}") from None

    @property
    def splits(self) -> bool:
        return self._trunk is not None

    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        batch = check_image(image)[None]
        if self._trunk is None or whole:
            if self._whole is None:
                self._whole = self._compile(self._path)
            self._whole.infer({0: batch})
            return ArraySource(np.array(self._whole.get_output_tensor(0).data[0]))
        self._trunk.infer({0: batch})
        outs = [
            np.array(self._trunk.get_output_tensor(i).data[0])
            for i in range(len(self._trunk.model_outputs))
        ]
        if self._input_tap is not None:
            self._input_tap.infer({0: batch})
            outs.insert(0, np.array(self._input_tap.get_output_tensor(0).data[0]))
        return self._source(outs, self.threads, self._head, self._dense)

    def describe(self) -> dict[str, Any]:
        head = self._head or "fp32"
        return {**super().describe(), "precision": self.precision, "head": head}

    def close(self) -> None:
        self._whole = None
        self._trunk = None
        self._input_tap = None
        self._dense = None


class _DenseRunner:
    """Runs a split's ``dense_graph`` (1×C×1×N in and out) on one infer request, one call at a
    time: a C×N float32 array in, a new C'×N array out."""

    def __init__(self, request: Any):
        import threading

        self._request = request
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        c, n = x.shape
        with self._lock:
            self._request.infer({0: np.ascontiguousarray(x).reshape(1, c, 1, n)})
            out = self._request.get_output_tensor(0).data
            return np.array(out).reshape(out.shape[1], n)
