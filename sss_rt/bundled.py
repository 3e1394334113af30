"""The files bundled with the package: the default model and the example photos."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sss_rt.errors import ModelError

DEFAULT_MODEL_NAME = "default.onnx"


def default_model_path() -> Path:
    """The model bundled with the package (raises ``ModelError`` if this build has none)."""
    path = Path(str(resources.files("sss_rt") / "data" / DEFAULT_MODEL_NAME))
    if not path.is_file():
        raise ModelError("this installation has no bundled default model; pass a model path")
    return path


def examples_dir() -> Path:
    """The folder of example images bundled with the package."""
    return Path(str(resources.files("sss_rt") / "data" / "examples"))
