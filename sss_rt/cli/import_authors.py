"""``sss-rt import-authors``: the authors' TensorFlow 1 checkpoint → an sss-rt ONNX model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("import-authors")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def import_authors(checkpoint: Path, output: Path) -> None:
    """Import CHECKPOINT, the authors' released extractor (their `model` folder, a checkpoint
    prefix or its .index file), into OUTPUT.onnx. Needs no TensorFlow. Use it with
    `sss-rt extract -m OUTPUT` and `sss-rt segment -m OUTPUT`."""
    from sss_rt.export.import_authors import import_authors as run

    info = run(checkpoint, output)
    click.echo(
        f"wrote {output} (family {info.family}, {info.backbone}, {info.feature_dim}-d "
        f"features; {info.source['variables_read']} of the checkpoint's "
        f"{info.source['variables_in_checkpoint']} variables read; "
        f"sha256 {info.source['sha256'][:12]}…)"
    )
