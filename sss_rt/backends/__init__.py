"""Runtime backends behind one interface; :func:`create_backend` builds one by name."""

from __future__ import annotations

import importlib.util
import os

from sss_rt.backends.base import Backend
from sss_rt.backends.support import SUPPORT, check_support
from sss_rt.device import Device
from sss_rt.errors import BackendUnavailableError
from sss_rt.precision import DEFAULT_PRECISION, check_precision, resolve_precision

#: backend name → the packages it needs (from the one table, :data:`SUPPORT`)
BACKENDS: dict[str, tuple[str, ...]] = {name: s.packages for name, s in SUPPORT.items()}
#: what ``--backend`` accepts: a backend name, or ``auto`` (by the model file's suffix)
BACKEND_CHOICES = ("auto", *BACKENDS)


def available_backends() -> dict[str, bool]:
    """Which backends can be created in this environment (without importing them).

    TensorRT also needs a CUDA runtime (CuPy or pycuda).
    """
    from sss_rt.cuda import installed_runtimes

    found = {
        name: all(importlib.util.find_spec(m) is not None for m in needs)
        for name, needs in BACKENDS.items()
    }
    found["tensorrt"] = found["tensorrt"] and bool(installed_runtimes())
    return found


def create_backend(
    name: str,
    model: str | os.PathLike[str],
    device: str | Device = "auto",
    threads: int | None = None,
    precision: str = DEFAULT_PRECISION,
    **options: object,
) -> Backend:
    """Build a backend by name (the one place that chooses).

    What a backend supports is :data:`SUPPORT`'s, checked here with its one message before
    anything is loaded.

    Parameters
    ----------
    name : {"auto", "onnxruntime", "openvino", "torch", "tensorrt"}
        ``"auto"``: torch for ``.pt``, else OpenVINO for bf16 and int8 on the CPU (where
        installed), ONNX Runtime otherwise.
    model : str or PathLike
        An sss-rt ONNX model, a TensorRT engine or a training checkpoint.
    device : str or Device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    threads : int, optional
        CPU threads.
    precision : {"fp32", "bf16", "int8", "tf32", "auto"}
        ``"auto"``: bf16 where the CPU has a bf16 unit and an ONNX model runs on the CPU, else
        fp32 (:func:`sss_rt.precision.resolve_precision`).
    **options
        Passed to the backend (e.g. ``execution="whole"``).

    Returns
    -------
    Backend

    Raises
    ------
    BackendUnavailableError
        The backend, its packages, the device or the precision are not available here.
    ModelError
        The model is missing or not an sss-rt model.
    ValueError
        An unknown backend, device or execution name.
    """
    device = Device.parse(device)
    torch_model = os.fspath(model).endswith((".pt", ".pth"))
    on_cpu = device.is_cpu or (device.kind == "auto" and not _gpu_backend_present())
    if precision == "auto":
        automatic = name in ("auto", "openvino") and not torch_model and on_cpu
        precision = resolve_precision("auto") if automatic else "fp32"
        if name == "auto" and precision == "bf16" and not available_backends()["openvino"]:
            precision = "fp32"
    check_precision(precision)
    if name == "auto":
        if torch_model:
            name = "torch"
        elif precision in ("bf16", "int8") and on_cpu and available_backends()["openvino"]:
            name = "openvino"
        else:
            name = "onnxruntime"
    execution = options.get("execution")
    check_support(name, device, precision, execution if isinstance(execution, str) else None)
    kwargs = {"device": device, "threads": threads, "precision": precision, **options}
    if name == "onnxruntime":
        from sss_rt.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, **kwargs)  # type: ignore[arg-type]
    if name == "openvino":
        from sss_rt.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(model, **kwargs)  # type: ignore[arg-type]
    if name == "torch":
        from sss_rt.backends.torch import TorchBackend

        return TorchBackend(model, **kwargs)  # type: ignore[arg-type]
    if name == "tensorrt":
        if not available_backends()["tensorrt"]:
            raise BackendUnavailableError(
                "the tensorrt backend needs TensorRT and a CUDA runtime (CuPy or pycuda) on an "
                "NVIDIA GPU (pip install 'sss-rt[gpu]'); use --backend onnxruntime here"
            )
        from sss_rt.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(model, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_CHOICES)}")


def _gpu_backend_present() -> bool:
    """Whether ``device="auto"`` may land on a GPU: onnxruntime-gpu's providers are there."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    from sss_rt.backends.onnxruntime import gpu_providers

    return bool(gpu_providers())


__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "SUPPORT",
    "Backend",
    "available_backends",
    "check_support",
    "create_backend",
]
