"""``sss-rt segment``: photos or extracted features → soft layers."""

from __future__ import annotations

from pathlib import Path

import click

from sss_rt.cli.batch_run import run_batch
from sss_rt.cli.params import (
    batch_arguments,
    extractor_kwargs,
    extractor_options,
)
from sss_rt.errors import ImageError


@click.command()
@batch_arguments
@click.option(
    "--scale",
    type=click.FloatRange(min=0, max=1, min_open=True),
    default=0.5,
    show_default=True,
    help="Resize the photo by this before segmenting (the authors' demo halves it); the layers "
    "are written at the photo's size. --scale 1: full resolution.",
)
@click.option(
    "--max-pixels", type=click.IntRange(min=0), default=640 * 480, show_default=True,
    help="Segment at most this many pixels: larger photos get a smaller scale (time and memory "
    "grow faster than the pixel count: a 640×480 photo segmented at full resolution, --scale 1, "
    "took 39 s and 2.6 GB on 2 AMD EPYC cores; at the default scale 0.5, 10 s and 0.9 GB). Larger "
    "photos are segmented at this size and their layers enlarged to the photo's size. "
    "0: no limit.",
)  # fmt: skip
@click.option("--layers", "layer_count", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--superpixels", type=click.IntRange(min=1), default=2500, show_default=True)
@click.option(
    "--eigenvectors", type=click.IntRange(min=2), default=100, show_default=True,
    help="Eigenvectors of the Laplacian the segments are made of.",
)  # fmt: skip
@click.option(
    "--segments", type=click.IntRange(min=1), default=40, show_default=True,
    help="Initial segments of the constrained sparsification (k-means on the features).",
)  # fmt: skip
@click.option("--iterations", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--relaxed-iterations", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--layers-png", is_flag=True, help="Also write each layer as an RGBA PNG (x.layer-K.png)."
)
@click.option(
    "--photos",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the photos of .npz feature inputs are (default: beside each .npz).",
)
@extractor_options
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def segment(
    inputs, out_dir, scale, max_pixels, layer_count, superpixels, eigenvectors, segments,
    iterations, relaxed_iterations, layers_png, photos, recursive, overwrite, quiet,
    **extractor_opts,
) -> None:  # fmt: skip
    """Soft layers (Semantic Soft Segmentation) of INPUTS: photos, whose features are computed
    first (any extract option applies), or features extracted before (x.sss.png, or x.npz with
    its photo beside it). Writes x.layers.npz (alphas H×W×K summing to 1; embedding, at the
    photo's size or, above 4× the segmented size, at twice that) and
    x.layers.png (the photo beside its layers) per input, in a mirror of the input tree.

    Existing outputs are skipped unless --overwrite; a file that fails is reported and the run
    goes on (exit 1 if any failed); Ctrl-C / SIGTERM stop after the file in progress is cleaned
    up (130 / 143); a full or read-only output folder stops the run (exit 6).
    """
    from sss_rt.batch import Progress, ensure_output_folder, segment_to
    from sss_rt.io.images import ImageTask, find_images, is_image_path
    from sss_rt.io.layers import feature_stem, is_feature_file, own_output_kind
    from sss_rt.segmentation import SegmentConfig, SoftSegmenter

    if not inputs:
        raise click.UsageError("give photos, feature files or folders")
    try:
        config = SegmentConfig(
            scale=scale, max_pixels=max_pixels, superpixels=superpixels, eigenvectors=eigenvectors,
            initial_segments=segments, iterations=iterations, layers=layer_count,
            relaxed_iterations=relaxed_iterations,
        )  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    own_outputs = 0

    def accept(path: Path) -> bool:
        # in folders: photos and .npz features (an .sss.png is a photo too: named, it is read
        # as features; found in a folder, by its name); never sss-rt's embedding or layer images
        nonlocal own_outputs
        if own_output_kind(path) is not None:
            own_outputs += 1
            return False
        return is_feature_file(path) or is_image_path(path)

    found, ignored = find_images(inputs, recursive=recursive, exclude=out_dir, accept=accept)
    ignored -= own_outputs
    tasks = [
        ImageTask(t.source, t.relative_stem.with_name(feature_stem(t.source)))
        if is_feature_file(t.source)
        else t
        for t in found
    ]
    if not tasks:
        raise ImageError("no photos or feature files found in the given inputs")
    ensure_output_folder(out_dir)
    options = extractor_kwargs(extractor_opts)

    def worker() -> SoftSegmenter:
        return SoftSegmenter(config=config, **options)

    def outcomes(seg: SoftSegmenter, progress: Progress):
        return segment_to(
            seg, tasks, out_dir, layer_pngs=layers_png, photos=photos, overwrite=overwrite,
            progress=progress,
        )  # fmt: skip

    notes = [f"{own_outputs} sss-rt outputs skipped (embedding and layer images are not photos)"]
    run_batch(
        len(tasks), worker, outcomes, quiet=quiet, done_word="segmented", ignored=ignored,
        notes=notes if own_outputs else [],
    )  # fmt: skip
