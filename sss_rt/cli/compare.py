"""``sss-rt compare``: run two models / backends on the same images and report differences."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from sss_rt.backends import BACKEND_CHOICES
from sss_rt.errors import SssRtError


def _split(spec: str) -> tuple[str, str | None]:
    """``BACKEND:PATH``, ``PATH`` (backend auto) or ``BACKEND`` (the bundled model)."""
    backend, sep, path = spec.partition(":")
    if sep and backend in BACKEND_CHOICES:
        return backend, path or None
    if spec in BACKEND_CHOICES:
        return spec, None
    return "auto", spec


def differences(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Max/mean absolute and relative (to A's largest magnitude) differences."""
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    scale = float(np.abs(a).max()) or 1.0
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "max_rel": float(diff.max() / scale),
        "mean_rel": float(diff.mean() / scale),
    }


@click.command()
@click.argument("a")
@click.argument("b")
@click.option(
    "-i",
    "--image",
    "images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Input image (repeatable; default: the bundled examples).",
)
@click.option("-d", "--device", default="auto", show_default=True, help="auto, cpu, cuda[:N]")
@click.option(
    "--max-rel",
    type=float,
    default=None,
    help="Fail (exit 1) if the features' max relative difference exceeds this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare(a, b, images, device, max_rel, as_json) -> None:
    """Compare two models or backends: A and B are BACKEND:MODEL, MODEL or BACKEND.

    Examples: ``sss-rt compare onnxruntime:m.onnx torch:m.onnx``,
    ``sss-rt compare m.onnx tensorrt:m.onnx -d cuda``. Reports, per image, the differences of
    the raw 128-d features and of the [0, 1] embedding.
    """
    from sss_rt.extractor import Extractor, examples_dir
    from sss_rt.io.images import load_image

    paths = list(images) or sorted(examples_dir().glob("*.jpg"))
    if not paths:
        raise SssRtError("no images to compare on")
    (ba, ma), (bb, mb) = _split(a), _split(b)
    report = {"a": {"backend": ba, "model": ma}, "b": {"backend": bb, "model": mb}, "images": []}
    worst = 0.0
    with (
        Extractor(ma, backend=ba, device=device) as ea,
        Extractor(mb, backend=bb, device=device) as eb,
    ):
        report["a"]["backend"], report["b"]["backend"] = ea.backend.name, eb.backend.name
        for path in paths:
            image = load_image(path)
            ra = ea.extract(image, return_features=True)
            rb = eb.extract(image, return_features=True)
            if ra.features.shape != rb.features.shape:
                raise SssRtError(
                    f"{path}: outputs differ in shape {ra.features.shape} vs {rb.features.shape}"
                )
            entry = {
                "image": str(path),
                "size": list(image.shape[:2]),
                "features": differences(ra.features, rb.features),
                "embedding": differences(ra.embedding, rb.embedding),
            }
            worst = max(worst, entry["features"]["max_rel"])
            report["images"].append(entry)
    report["worst_features_max_rel"] = worst
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(
            f"A: {report['a']['backend']} {ma or '(bundled model)'}\n"
            f"B: {report['b']['backend']} {mb or '(bundled model)'}"
        )
        for e in report["images"]:
            f, m = e["features"], e["embedding"]
            click.echo(
                f"{Path(e['image']).name} {e['size'][0]}×{e['size'][1]}: features max abs "
                f"{f['max_abs']:.3g} (rel {f['max_rel']:.3g}), mean abs {f['mean_abs']:.3g}; "
                f"embedding max abs {m['max_abs']:.3g}, mean abs {m['mean_abs']:.3g}"
            )
    if max_rel is not None and worst > max_rel:
        click.echo(f"features differ by {worst:.3g} (relative), above {max_rel:g}", err=True)
        sys.exit(1)
