"""Parameter types shared by the commands."""

from __future__ import annotations

import re

import click


def parse_hw(text: str) -> tuple[int, int]:
    """``"768x1024"`` (or ``768×1024``) → (768, 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*[x×X,]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"expected HEIGHTxWIDTH, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def hw_callback(ctx: click.Context, param: click.Parameter, value):
    """Click callback: one ``HxW`` string, or a tuple of them (``multiple=True``)."""
    try:
        if isinstance(value, tuple):
            return tuple(parse_hw(v) for v in value)
        return parse_hw(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
