"""``sss-rt info``: versions, backends, GPUs, and a model's metadata."""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
from pathlib import Path

import click


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _segmentation_kernels() -> str:
    """The segmentation's compiled kernels, or why the segmentation cannot load here (info
    works in a partial environment, e.g. a GPU image without SciPy or OpenCV)."""
    try:
        from sss_rt.segmentation import native as segmentation_native
    except ImportError as exc:
        return f"unavailable: {exc}"
    return str(segmentation_native.describe())


def _segmentation_factorization() -> str:
    """How the eigenvector stage factorizes L − σI here (MKL PARDISO, else SuperLU)."""
    try:
        from sss_rt.segmentation import pardiso
    except ImportError as exc:
        return f"unavailable: {exc}"
    return pardiso.describe()


def environment() -> dict:
    from sss_rt import native
    from sss_rt._version import __version__
    from sss_rt.backends import available_backends
    from sss_rt.backends.support import describe as support_table

    env: dict = {
        "sss-rt": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            d: _version(d)
            for d in (
                "numpy",
                "opencv-python-headless",
                "onnx",
                "onnxruntime",
                "onnxruntime-gpu",
                "torch",
                "tensorrt",
                "pycuda",
                "cupy-cuda12x",
                "cupy-cuda13x",
                "mkl",
            )
        },
        "backends": available_backends(),
        "backend support (device: precisions — executions)": support_table(),
        "postprocess_engine": native.describe(),
        "segmentation_kernels": _segmentation_kernels(),
        "segmentation_factorization": _segmentation_factorization(),
    }
    try:
        import onnxruntime as ort

        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        env["onnxruntime_providers"] = []
    from sss_rt.precision import (
        bf16_unit,
        cpu_units,
        head_variant,
        int8_unit,
        resolve_precision,
    )

    env["cpu_units"] = cpu_units()
    env["int8_runs_on"] = int8_unit()
    env["bf16_runs_on"] = bf16_unit() or "no bf16 unit"
    env["precision_auto_picks"] = resolve_precision("auto")
    env["head_kernel"] = head_variant("bf16") or "fp32"
    env["head_kernel_int8"] = head_variant("int8") or "fp32"
    env["gpus"] = _gpus()
    env["gpu_parts"] = gpu_parts()
    return env


def gpu_parts() -> dict[str, str]:
    """Each GPU part of the SDK: ``"usable ..."`` or ``"unavailable: why; what to do"``."""
    import ctypes
    import shutil

    parts: dict[str, str] = {}
    try:
        ctypes.CDLL("libcuda.so.1")
        driver = ""
    except OSError:
        driver = "no NVIDIA driver here (libcuda.so.1 not found)"
    parts["nvidia driver"] = f"unavailable: {driver}" if driver else "usable"

    nvcc = shutil.which("nvcc")
    parts["nvcc (compiles the CUDA kernels at first use)"] = (
        f"usable ({nvcc})" if nvcc else "unavailable: not on PATH; install the CUDA toolkit"
    )

    from sss_rt.cuda import ENV, installed_runtimes, requested_runtime

    runtimes = installed_runtimes()
    try:
        asked = requested_runtime()
    except Exception as exc:  # a bad SSS_RT_CUDA_RUNTIME
        asked, why = "auto", str(exc)
    else:
        why = ""
    forced = f" ({ENV}={asked})" if asked != "auto" else ""
    parts["cuda runtimes"] = (
        f"usable: {', '.join(runtimes)} installed{forced}"
        if runtimes
        else "unavailable: none installed: pip install 'sss-rt[cuda12]' (CuPy) or "
        "'sss-rt[gpu]' (pycuda)"
    )
    if why:
        pass
    elif not runtimes and asked == "auto":
        why = "no CUDA runtime (pycuda or CuPy) installed"
    elif driver:
        why = driver
    else:
        try:
            from sss_rt.cuda import cuda_runtime

            runtime = cuda_runtime(0)
            parts["cuda post-processing"] = f"usable: {runtime.describe()}{forced}"
        except Exception as exc:
            why = str(exc)
    if why:
        parts["cuda post-processing"] = f"unavailable: {why}; extraction post-processes on the CPU"
    both = _version("onnxruntime") and _version("onnxruntime-gpu")
    if both:
        parts["onnxruntime packages"] = (
            "unavailable: onnxruntime and onnxruntime-gpu are both installed and overwrite each "
            "other's files: pip uninstall -y onnxruntime onnxruntime-gpu && pip install "
            "onnxruntime-gpu"
        )

    torch_version = _version("torch")
    if not torch_version:
        parts["torch backend on cuda"] = "unavailable: torch not installed"
    elif "+cpu" in torch_version:
        parts["torch backend on cuda"] = f"unavailable: torch {torch_version} is a CPU build"
    else:
        import torch

        parts["torch backend on cuda"] = (
            "usable" if torch.cuda.is_available() else "unavailable: PyTorch sees no CUDA GPU"
        )

    if not _version("tensorrt"):
        parts["tensorrt backend"] = (
            "unavailable: tensorrt not installed: pip install 'sss-rt[gpu]' (tensorrt>=10,<12)"
        )
    elif not runtimes:
        parts["tensorrt backend"] = "unavailable: it needs a CUDA runtime too (CuPy or pycuda)"
    else:
        parts["tensorrt backend"] = f"usable (TensorRT {_version('tensorrt')})" + (
            f", but {driver}" if driver else ""
        )

    try:
        import onnxruntime as ort

        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        has_cuda = False
    parts["onnxruntime on cuda"] = (
        "usable"
        if has_cuda
        else "unavailable: this onnxruntime has no CUDA execution provider: "
        "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
    )
    return parts


def _gpus() -> list[str]:
    if _version("torch"):
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "-m", "--model", "model_option", type=click.Path(path_type=Path), help="The same as MODEL."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(model: Path | None, model_option: Path | None, as_json: bool) -> None:
    """Show versions, available backends and GPUs, and MODEL's metadata (default: bundled):
    its family and what that allows, input mean and channel order, where its weights came
    from."""
    from sss_rt.errors import ModelError
    from sss_rt.extractor import default_model_path
    from sss_rt.families import family_named
    from sss_rt.model_info import read_model_info

    report = environment()
    model = model or model_option
    try:
        path = model or default_model_path()
        meta = read_model_info(path)
        family = family_named(meta.family)
        report["model"] = {
            "path": str(path),
            **meta.__dict__,
            "family_is": family.description,
            "family_allows": (
                f"precisions {'/'.join(family.precisions)}; backbone in tiles: "
                f"{'yes' if family.tiling else 'no (per-image statistics)'}; batch norm "
                f"{'folded' if family.folded_batch_norm else 'per image, not folded'}"
            ),
        }
    except ModelError as exc:
        if model is not None:
            raise
        report["model"] = {"error": str(exc)}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    for key, value in report.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for k, v in value.items():
                click.echo(f"  {k}: {v}")
        else:
            click.echo(f"{key}: {value}")
