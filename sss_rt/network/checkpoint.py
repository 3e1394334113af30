"""Checkpoint files: saved with torch.save, loaded with ``weights_only=True`` (no pickled code)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sss_rt.errors import ModelError

CHECKPOINT_FORMAT = "sss-rt-checkpoint"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Atomically write ``state`` (which must hold ``backbone`` and ``model``) to ``path``."""
    import torch

    if "backbone" not in state or "model" not in state:
        raise ValueError("a checkpoint needs 'backbone' and 'model' entries")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_weights_file(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """``torch.load`` a dict with ``weights_only=True``; a one-line ``ModelError`` otherwise."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{what} not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"not a loadable {what}: {path} ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path} does not hold a dict of tensors ({what})")
    return state


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load an sss-rt checkpoint dict; a clear ``ModelError`` for anything else."""
    state = load_weights_file(path, "sss-rt checkpoint")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not an sss-rt checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    return state


def load_network(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Return ``(HypercolumnNet in eval mode, metadata dict)`` from a checkpoint file."""
    from sss_rt.network.model import HypercolumnNet

    state = load_checkpoint(path)
    try:
        net = HypercolumnNet(
            state["backbone"], feature_scale=float(state.get("feature_scale", 1.0))
        )
        net.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelError(f"checkpoint {path} does not match the network ({exc})") from None
    meta = {"backbone": state["backbone"], **dict(state.get("meta", {}))}
    return net.eval(), meta
