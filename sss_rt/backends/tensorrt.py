"""TensorRT backend: runs an engine built by ``sss_rt.export.engine`` (v3 API, its own stream).

Its features stay on the GPU: a :class:`~sss_rt.bands.DeviceArraySource` over the output binding,
with an event recorded after the engine ran, which the CUDA post-processing's stream waits on;
bands are copied to the host only when a host post-processing asks for them. TensorRT and the CUDA
runtime (:mod:`sss_rt.cuda`: pycuda or CuPy) are imported only when used; every call makes the
device (``device="cuda:N"``) current on the calling thread for its duration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sss_rt.backends.base import Backend, check_image
from sss_rt.backends.support import check_support
from sss_rt.bands import DeviceArraySource, FeatureSource
from sss_rt.device import Device
from sss_rt.errors import ModelError
from sss_rt.export.engine import (
    BuildSettings,
    Profile,
    build,
    cached_engine,
    mismatch,
    require_tensorrt,
    running_machine,
    sidecar_path,
)
from sss_rt.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo
from sss_rt.precision import DEFAULT_PRECISION


class TensorRTBackend(Backend):
    """Runs a TensorRT engine (v3 API, one stream); ``model`` is an engine or an ONNX file.

    An ONNX file is built once into the engine cache; an engine whose sidecar does not match
    the running GPU / TensorRT is rebuilt from its ONNX if known, or refused with ``strict``.
    """

    name = "tensorrt"

    def __init__(
        self,
        model: str | os.PathLike[str],
        device: str | Device = "auto",
        threads: int | None = None,
        settings: BuildSettings | None = None,
        strict: bool = False,
        precision: str = DEFAULT_PRECISION,
    ):
        del threads
        parsed = check_support(self.name, device, precision, "whole")
        trt = require_tensorrt()
        from sss_rt.cuda import cuda_runtime

        self._device = str(Device("cuda", parsed.index))
        self._runtime = cuda_runtime(parsed.cuda_index)
        with self._runtime.activate():
            self._open(trt, Path(model), settings, strict)

    def _open(self, trt: Any, path: Path, settings: BuildSettings | None, strict: bool) -> None:
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        machine = running_machine(self._device)
        settings = settings or BuildSettings()
        onnx = path if path.suffix == ".onnx" else None
        engine_path = (
            cached_engine(onnx, settings, machine, self._device) if onnx is not None else path
        )
        record_file = sidecar_path(engine_path)
        if not record_file.is_file():
            raise ModelError(f"{engine_path}: no sidecar {record_file.name}; rebuild the engine")
        record = json.loads(record_file.read_text())
        problem = mismatch(record, machine)
        if problem:
            if strict or onnx is None:
                raise ModelError(f"{engine_path}: {problem}; rebuild it with sss-rt build-engine")
            build(onnx, engine_path, settings, device=self._device)
            record = json.loads(record_file.read_text())
        if not record.get("model"):
            raise ModelError(f"{engine_path}: its sidecar does not describe the model")
        model_info = dict(record["model"])
        model_info["mean"], model_info["std"] = tuple(model_info["mean"]), tuple(model_info["std"])
        self._info = ModelInfo(**model_info)
        self.profile = Profile(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in record["profile"].items()}
        )
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise ModelError(
                f"{engine_path}: TensorRT could not deserialize it (built for "
                f"TensorRT {record.get('tensorrt')}, running {trt.__version__})"
            )
        self._context = self._engine.create_execution_context()
        self._stream = self._runtime.stream()
        self.record = record

    def run_device(self, image: np.ndarray) -> tuple[Any, tuple[int, ...]]:
        """Run on one H×W×3 uint8 image; the 1×C×H×W output stays on the GPU."""
        with self._runtime.activate():
            return self._run_device(image)

    def _run_device(self, image: np.ndarray) -> tuple[Any, tuple[int, ...]]:
        rt = self._runtime
        images = check_image(image)[None]
        self.profile.check(images.shape)
        host_in = rt.pinned(images.shape, np.uint8)
        host_in[...] = images
        d_in = rt.empty(images.shape, np.uint8)
        rt.copy_from_host(d_in.ptr, host_in, self._stream)
        if not self._context.set_input_shape(INPUT_NAME, images.shape):
            raise ModelError(f"the engine refuses input shape {images.shape}")
        out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        dtype = np.dtype(_trt_dtype(self._engine.get_tensor_dtype(OUTPUT_NAME)))
        d_out = rt.empty(out_shape, dtype)
        self._context.set_tensor_address(INPUT_NAME, d_in.ptr)
        self._context.set_tensor_address(OUTPUT_NAME, d_out.ptr)
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError("TensorRT execution failed")
        d_out.keep = (d_in, host_in)  # alive until the stream has used them
        return d_out, out_shape

    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        with self._runtime.activate():
            d_out, shape = self._run_device(image)
            ready = self._runtime.record(self._stream)  # the consumer's stream waits on it
        return DeviceArraySource(
            d_out.ptr, shape[1:], d_out.dtype, self._runtime, ready=ready, owner=d_out
        )

    def close(self) -> None:
        self._context = None
        self._engine = None


def _trt_dtype(dtype: Any) -> Any:
    import tensorrt as trt

    return trt.nptype(dtype)
