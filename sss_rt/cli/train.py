"""``sss-rt train``: the seed's training procedure (needs torch)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from sss_rt.errors import BackendUnavailableError


@click.command()
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for checkpoints (latest.pt) and the training log.",
)
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(exists=True, path_type=Path),
    help="JSON file of TrainConfig settings; options given here override it.",
)
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101"]))
@click.option("--iterations", type=click.IntRange(min=1))
@click.option("--data", help="synthetic | folder:PATH | coco:IMAGES,JSON[,STUFF]")
@click.option("--crop", type=click.IntRange(min=16))
@click.option("--pixels", "n_pixels", type=click.IntRange(min=2), help="P_pix (default 1000)")
@click.option("--samplings", type=click.IntRange(min=1), help="samplings per image (10)")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "adamw"]),
    help="sgd (the seed's, default) or adamw.",
)
@click.option("--lr-backbone", type=click.FloatRange(min=0, min_open=True))
@click.option("--lr-new", type=click.FloatRange(min=0, min_open=True))
@click.option(
    "--feature-scale",
    type=click.FloatRange(min=0, min_open=True),
    help="Fixed factor on the output features (1 in the seed; see docs/MODEL_CARD.md).",
)
@click.option("--init", type=click.Path(exists=True), help="Backbone state-dict file.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]))
@click.option("--seed", type=int)
@click.option("--save-every", type=click.IntRange(min=1))
@click.option("--log-every", type=click.IntRange(min=1))
@click.option(
    "--stop-at",
    type=click.IntRange(min=1),
    help="Stop after this iteration (the schedule still spans --iterations).",
)
@click.option("--no-resume", is_flag=True, help="Start over even if OUT has a checkpoint.")
def train(out_dir, config_file, stop_at, no_resume, **options) -> None:
    """Train the feature network; resumes from OUT/latest.pt when present."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "training needs PyTorch: pip install 'sss-rt[train]'"
        ) from None
    from sss_rt.training.trainer import TrainConfig, Trainer

    given = {k: v for k, v in options.items() if v is not None}
    if config_file:
        cfg = TrainConfig.from_file(config_file, **given)
    else:
        cfg = TrainConfig.from_dict(given)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    handler = logging.FileHandler(out_dir / "train.log")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        handlers=[logging.StreamHandler(), handler],
    )
    trainer = Trainer(cfg, out_dir)
    trainer.run(stop_at, resume=not no_resume)
    click.echo(f"iteration {trainer.iteration}: checkpoint {trainer.latest_path}")
