"""``sss-rt eval``: held-out pair AUC and clustering score of a model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sss_rt.precision import PRECISION_CHOICES


@click.command("eval")
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--scenes", "count", default=40, show_default=True, type=click.IntRange(min=1))
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=16))
@click.option(
    "--data",
    default="synthetic",
    show_default=True,
    help="synthetic (held-out scenes) | folder:PATH | coco:IMAGES,JSON[,STUFF]",
)
@click.option("-b", "--backend", default="auto", show_default=True)
@click.option(
    "--precision", type=click.Choice(PRECISION_CHOICES), default="fp32", show_default=True
)
@click.option("--json", "as_json", is_flag=True)
def evaluate(model, count, size, data, backend, precision, as_json) -> None:
    """Score MODEL (default: the bundled one) on held-out scenes: pair AUC and k-means ARI."""
    from sss_rt.extractor import Extractor
    from sss_rt.training.evaluate import evaluate as run_eval

    if data == "synthetic":
        from sss_rt.synthetic import HELD_OUT_SEED, SyntheticScenes

        scenes = SyntheticScenes((size, size), seed=HELD_OUT_SEED)
    else:
        from sss_rt.training.datasets import make_dataset

        scenes = make_dataset(data, 0, size)
        count = min(count, len(scenes))
    with Extractor(model, backend=backend, precision=precision) as extractor:
        report = run_eval(extractor, scenes, count, seed=0)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(
            f"{report.images} scenes {report.size[0]}×{report.size[1]}: "
            f"pair AUC {report.pair_auc:.4f} (raw RGB on the same pairs: "
            f"{report.rgb_pair_auc:.4f}), k-means ARI {report.ari:.4f}"
        )
