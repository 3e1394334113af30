"""``sss-rt build-engine``: an ONNX model → a TensorRT engine with a JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sss_rt.cli.params import hw_callback
from sss_rt.errors import ModelError


@click.command("build-engine")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Engine file (default: MODEL with .engine); a .json sidecar goes beside it.",
)
@click.option("--min-size", default="128x128", show_default=True, callback=hw_callback, help="H×W.")
@click.option(
    "--opt-size", default="768x1024", show_default=True, callback=hw_callback, help="H×W."
)
@click.option(
    "--max-size", default="2048x2048", show_default=True, callback=hw_callback, help="H×W."
)
@click.option("--min-batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--opt-batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--max-batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--precision", type=click.Choice(["auto", "fp16", "fp32"]), default="auto", show_default=True
)
@click.option("--workspace-mb", default=4096, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Timing cache file, read if present and updated (speeds up later builds).",
)
def build_engine(
    model: Path,
    output: Path | None,
    min_size,
    opt_size,
    max_size,
    min_batch,
    opt_batch,
    max_batch,
    precision,
    workspace_mb,
    timing_cache,
) -> None:
    """Build a TensorRT engine with a dynamic-shape profile from MODEL.onnx (needs a GPU)."""
    from sss_rt.export.engine import BuildSettings, Profile, build, require_tensorrt

    if not model.is_file():
        raise ModelError(f"model file not found: {model}")
    try:
        profile = Profile(min_size, opt_size, max_size, min_batch, opt_batch, max_batch)
        settings = BuildSettings(
            profile, precision, workspace_mb, timing_cache and str(timing_cache)
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    require_tensorrt()  # a one-line message, before anything else, where TensorRT is missing
    output = output or model.with_suffix(".engine")
    record = build(model, output, settings, log=lambda m: click.echo(m, err=True))
    click.echo(f"wrote {output} and {output}.json")
    click.echo(json.dumps(record, indent=2))
