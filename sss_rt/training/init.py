"""Initialization of the backbone from a local torchvision ResNet / DeepLabV3 state-dict file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sss_rt.errors import ModelError

#: prefixes of state-dict entries that belong to other heads and are ignored
_IGNORED_PREFIXES = ("fc.", "classifier.", "aux_classifier.")


@dataclass(frozen=True)
class LoadReport:
    loaded: int
    missing: list[str]
    unexpected: list[str]
    ignored: int


def backbone_state_dict(state: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Map a torchvision ResNet or DeepLabV3 state dict to backbone keys; count ignored entries."""
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    out: dict[str, Any] = {}
    ignored = 0
    for key, value in state.items():
        name = key[len("backbone.") :] if key.startswith("backbone.") else key
        if name.startswith(_IGNORED_PREFIXES):
            ignored += 1
            continue
        out[name] = value
    return out, ignored


def load_backbone(net: Any, source: str | os.PathLike[str] | dict[str, Any]) -> LoadReport:
    """Load backbone weights into ``net`` (a ``HypercolumnNet``) from a file or a dict."""
    from sss_rt.network.checkpoint import load_weights_file

    state = source if isinstance(source, dict) else load_weights_file(source, "backbone weights")
    mapped, ignored = backbone_state_dict(state)
    target = net.backbone.state_dict()
    shaped = {
        k: v for k, v in mapped.items() if k in target and tuple(v.shape) == tuple(target[k].shape)
    }
    wrong_shape = [k for k in mapped if k in target and k not in shaped]
    result = net.backbone.load_state_dict(shaped, strict=False)
    unexpected = sorted(
        [*result.unexpected_keys, *(k for k in mapped if k not in target), *wrong_shape]
    )
    if not shaped:
        raise ModelError("no backbone weights matched: is this a ResNet / DeepLabV3 state dict?")
    return LoadReport(len(shaped), sorted(result.missing_keys), unexpected, ignored)
