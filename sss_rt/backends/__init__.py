"""Runtime backends behind one interface; :func:`create_backend` builds one by name."""

from __future__ import annotations

import importlib.util
import os

from sss_rt.backends.base import Backend
from sss_rt.errors import BackendUnavailableError

BACKENDS = ("onnxruntime", "torch", "tensorrt")


def available_backends() -> dict[str, bool]:
    """Which backends can be created in this environment (without importing them)."""
    have = {
        m: importlib.util.find_spec(m) is not None for m in ("onnxruntime", "torch", "tensorrt")
    }
    return {
        "onnxruntime": have["onnxruntime"],
        "torch": have["torch"],
        "tensorrt": have["tensorrt"] and importlib.util.find_spec("pycuda") is not None,
    }


def create_backend(
    name: str,
    model: str | os.PathLike[str],
    device: str = "auto",
    threads: int | None = None,
) -> Backend:
    """Build a backend by name; ``"auto"``: ONNX Runtime for ``.onnx``, torch for ``.pt``."""
    if name == "auto":
        name = "torch" if os.fspath(model).endswith((".pt", ".pth")) else "onnxruntime"
    if name == "onnxruntime":
        from sss_rt.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, device=device, threads=threads)
    if name == "torch":
        from sss_rt.backends.torch import TorchBackend

        return TorchBackend(model, device=device, threads=threads)
    if name == "tensorrt":
        if not available_backends()["tensorrt"]:
            raise BackendUnavailableError(
                "the tensorrt backend needs TensorRT and pycuda on an NVIDIA GPU "
                "(pip install 'sss-rt[gpu]'); use --backend onnxruntime on this machine"
            )
        from sss_rt.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(model, device=device, threads=threads)
    raise ValueError(f"unknown backend {name!r}; choose from auto, {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "available_backends", "create_backend"]
