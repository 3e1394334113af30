"""Runtime backends behind one interface; :func:`create_backend` builds one by name."""

from __future__ import annotations

import importlib.util
import os

from sss_rt.backends.base import Backend
from sss_rt.errors import BackendUnavailableError

#: backend name → the packages it needs (the one list of backends)
BACKENDS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",),
    "torch": ("torch",),
    "tensorrt": ("tensorrt", "pycuda"),
}
#: what ``--backend`` accepts: a backend name, or ``auto`` (by the model file's suffix)
BACKEND_CHOICES = ("auto", *BACKENDS)


def available_backends() -> dict[str, bool]:
    """Which backends can be created in this environment (without importing them)."""
    return {
        name: all(importlib.util.find_spec(m) is not None for m in needs)
        for name, needs in BACKENDS.items()
    }


def create_backend(
    name: str,
    model: str | os.PathLike[str],
    device: str = "auto",
    threads: int | None = None,
    **options: object,
) -> Backend:
    """Build a backend by name (the one place that chooses); ``"auto"``: ONNX Runtime for
    ``.onnx``, torch for ``.pt``. ``options`` go to the backend (e.g. ``execution="whole"``)."""
    if name == "auto":
        name = "torch" if os.fspath(model).endswith((".pt", ".pth")) else "onnxruntime"
    if name == "onnxruntime":
        from sss_rt.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, device=device, threads=threads, **options)  # type: ignore[arg-type]
    if name == "torch":
        from sss_rt.backends.torch import TorchBackend

        return TorchBackend(model, device=device, threads=threads, **options)  # type: ignore[arg-type]
    if name == "tensorrt":
        if not available_backends()["tensorrt"]:
            raise BackendUnavailableError(
                "the tensorrt backend needs TensorRT and pycuda on an NVIDIA GPU "
                "(pip install 'sss-rt[gpu]'); use --backend onnxruntime on this machine"
            )
        from sss_rt.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(model, device=device, threads=threads, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_CHOICES)}")


__all__ = ["BACKENDS", "BACKEND_CHOICES", "Backend", "available_backends", "create_backend"]
