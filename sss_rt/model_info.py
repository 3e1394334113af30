"""Self-description of exported models (ONNX metadata), readable without torch."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from sss_rt.errors import ModelError

INPUT_NAME = "image"
OUTPUT_NAME = "features"
METADATA_PREFIX = "sss_rt."
#: metadata key of a model made by ``sss-rt quantize`` (its recipe, as JSON)
QUANTIZATION_KEY = METADATA_PREFIX + "quantization"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What an sss-rt ONNX model says about itself."""

    backbone: str
    feature_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_layout: str = "NHWC uint8 RGB"
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: the network family (:mod:`sss_rt.families`); models older than families: hypercolumn
    family: str = "hypercolumn"
    #: the channel order the network computes in (the input is always RGB; ``mean`` is given
    #: in this order)
    channel_order: str = "RGB"
    #: where the weights came from (an imported checkpoint: its name, sha256, variables)
    source: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {
            METADATA_PREFIX + key: json.dumps(value) if not isinstance(value, str) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelInfo:
        text = ("backbone", "input_layout", "family", "channel_order")

        def get(key: str, default: Any = None) -> Any:
            if default is not None and METADATA_PREFIX + key not in props:
                return default
            raw = props[METADATA_PREFIX + key]
            return raw if key in text else json.loads(raw)

        try:
            return cls(
                backbone=get("backbone"),
                feature_dim=int(get("feature_dim")),
                mean=tuple(get("mean")),
                std=tuple(get("std")),
                input_layout=get("input_layout"),
                training=dict(get("training")),
                format_version=int(get("format_version")),
                family=get("family", "hypercolumn"),
                channel_order=get("channel_order", "RGB"),
                source=dict(get("source", {})),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"model metadata is incomplete or malformed ({exc})") from None


def read_model_info(path: str | os.PathLike[str]) -> ModelInfo:
    """Read the sss-rt metadata of an ONNX file without loading its weights."""
    import onnx

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"model file not found: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for non-ONNX files
        raise ModelError(f"not a readable ONNX model: {path} ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if not any(k.startswith(METADATA_PREFIX) for k in props):
        raise ModelError(f"{path} is an ONNX model but not an sss-rt feature model (no metadata)")
    return ModelInfo.from_metadata(props)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (model provenance, engine cache keys)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def initializers(model: Any) -> dict[str, Any]:
    """An ONNX model's initializers by name, including the names they are re-exposed under.

    The exporter shares deduplicated weights through ``Identity`` nodes and stores half-precision
    weights behind ``Cast`` nodes; both outputs name the same tensor.
    """
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("Identity", "Cast") and node.input and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    return inits
