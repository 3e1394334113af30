"""``sss-rt export``: a training checkpoint → an ONNX model."""

from __future__ import annotations

from pathlib import Path

import click

from sss_rt.errors import BackendUnavailableError


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--opset", type=click.IntRange(min=17), default=17, show_default=True)
@click.option(
    "--fp16-weights",
    is_flag=True,
    help="Store weights as float16 (half the size; computation stays float32).",
)
def export(checkpoint: Path, output: Path, opset: int, fp16_weights: bool) -> None:
    """Export CHECKPOINT (from `sss-rt train`) to OUTPUT.onnx in the inference form."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("export needs PyTorch: pip install 'sss-rt[train]'") from None
    from sss_rt.export.onnx_export import export_checkpoint

    info = export_checkpoint(checkpoint, output, opset=opset, fp16_weights=fp16_weights)
    click.echo(f"wrote {output} ({info.backbone}, {info.feature_dim}-d features, opset {opset})")
