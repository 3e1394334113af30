"""``sss-rt quantize``: an ONNX model → its int8 form for ONNX Runtime (and its calibration set)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def quantize(model: Path, output: Path) -> None:
    """Quantize MODEL (an sss-rt ONNX model) to int8 into OUTPUT, calibrated on the bundled
    example photos and synthetic scenes; the images are kept as OUTPUT.calibration.npz (for a
    TensorRT INT8 engine later). Use it with `sss-rt extract -m OUTPUT --precision int8`."""
    from sss_rt.errors import ModelError
    from sss_rt.export.quantize import calibration_path
    from sss_rt.export.quantize import quantize as run

    if not model.is_file():
        raise ModelError(f"model file not found: {model}")
    record = run(model, output)
    click.echo(
        f"wrote {output} (int8, {record['backbone']}, calibrated on "
        f"{record['calibration_images']} images: {calibration_path(output)})"
    )
