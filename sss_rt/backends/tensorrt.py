"""TensorRT backend: runs an engine built by ``sss_rt.export.engine`` (v3 API, its own stream).

Its features stay on the GPU: a :class:`~sss_rt.bands.DeviceArraySource` over the output binding,
with an event recorded after the engine ran, which the CUDA post-processing's stream waits on;
bands are copied to the host only when a host post-processing asks for them. TensorRT and pycuda
are imported only when used; the device's primary context (``device="cuda:N"``) is pycuda's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from sss_rt.backends.base import Backend, check_image
from sss_rt.bands import DeviceArraySource, FeatureSource
from sss_rt.errors import BackendUnavailableError, ModelError
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


class TensorRTBackend(Backend):
    """Runs a TensorRT engine (v3 API, one stream); ``model`` is an engine or an ONNX file.

    An ONNX file is built once into the engine cache; an engine whose sidecar does not match
    the running GPU / TensorRT is rebuilt from its ONNX if known, or refused with ``strict``.
    """

    name = "tensorrt"

    def __init__(
        self,
        model: str | os.PathLike[str],
        device: str = "auto",
        threads: int | None = None,
        settings: BuildSettings | None = None,
        strict: bool = False,
        precision: str = "fp32",
    ):
        del threads
        if precision != "fp32":  # an engine's precision is a build setting (build-engine)
            raise BackendUnavailableError(
                "TensorRT engines take their precision from sss-rt build-engine --precision"
            )
        trt = require_tensorrt()
        from sss_rt.postprocess.cuda import pycuda_runtime

        self._device = "cuda" if device == "auto" else device
        self._runtime = pycuda_runtime(self._device)
        drv = self._drv = self._runtime.drv
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        machine = running_machine()
        settings = settings or BuildSettings()
        onnx = path if path.suffix == ".onnx" else None
        engine_path = cached_engine(onnx, settings, machine) if onnx is not None else path
        record_file = sidecar_path(engine_path)
        if not record_file.is_file():
            raise ModelError(f"{engine_path}: no sidecar {record_file.name}; rebuild the engine")
        record = json.loads(record_file.read_text())
        problem = mismatch(record, machine)
        if problem:
            if strict or onnx is None:
                raise ModelError(f"{engine_path}: {problem}; rebuild it with sss-rt build-engine")
            build(onnx, engine_path, settings)
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
        self._stream = drv.Stream()
        self.record = record

    def run_device(self, image: np.ndarray) -> tuple[Any, tuple[int, ...]]:
        """Run on one H×W×3 uint8 image; the 1×C×H×W output stays on the GPU."""
        drv = self._drv
        images = check_image(image)[None]
        self.profile.check(images.shape)
        host_in = drv.pagelocked_empty(images.shape, np.uint8)
        host_in[...] = images
        d_in = drv.mem_alloc(host_in.nbytes)
        drv.memcpy_htod_async(d_in, host_in, self._stream)
        if not self._context.set_input_shape(INPUT_NAME, images.shape):
            raise ModelError(f"the engine refuses input shape {images.shape}")
        out_shape = tuple(self._context.get_tensor_shape(OUTPUT_NAME))
        itemsize = np.dtype(_trt_dtype(self._engine.get_tensor_dtype(OUTPUT_NAME))).itemsize
        d_out = drv.mem_alloc(int(np.prod(out_shape)) * itemsize)
        self._context.set_tensor_address(INPUT_NAME, int(d_in))
        self._context.set_tensor_address(OUTPUT_NAME, int(d_out))
        if not self._context.execute_async_v3(self._stream.handle):
            raise RuntimeError("TensorRT execution failed")
        self._keep = (d_in, host_in)  # alive until the stream has used them
        return d_out, out_shape

    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        d_out, shape = self.run_device(image)
        dtype = _trt_dtype(self._engine.get_tensor_dtype(OUTPUT_NAME))
        ready = self._drv.Event()
        ready.record(self._stream)  # the consumer's stream waits on it
        return DeviceArraySource(
            int(d_out), shape[1:], dtype, self._runtime, ready=ready, owner=(d_out, self._keep)
        )

    def close(self) -> None:
        self._context = None
        self._engine = None


def _trt_dtype(dtype: Any) -> Any:
    import tensorrt as trt

    return trt.nptype(dtype)
