"""``sss-rt build-engine``: an ONNX model → a TensorRT engine (needs TensorRT)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from sss_rt.errors import BackendUnavailableError


@click.command("build-engine")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Engine file (default: MODEL with .engine).",
)
def build_engine(model: Path, output: Path | None) -> None:
    """Build a TensorRT engine with dynamic height/width from MODEL.onnx."""
    if importlib.util.find_spec("tensorrt") is None:
        raise BackendUnavailableError(
            "TensorRT is not installed: build-engine needs an NVIDIA GPU and "
            "pip install 'sss-rt[gpu]' (tensorrt); nothing was built"
        )
    raise BackendUnavailableError("the TensorRT engine builder is not part of this version yet")
