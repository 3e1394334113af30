"""``sss-rt extract``: images and folders → feature files."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from sss_rt.backends import BACKEND_CHOICES
from sss_rt.errors import OutputError, SssRtError
from sss_rt.io.writers import FORMATS
from sss_rt.postprocess.config import MODES
from sss_rt.precision import PRECISION_CHOICES

EXIT_SOME_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Output folder; the input folders' tree is mirrored inside it.",
)
@click.option(
    "-f",
    "--format",
    "formats",
    multiple=True,
    default=("png", "npz"),
    show_default=True,
    type=click.Choice(list(FORMATS)),
    help="Output format (repeatable): "
    + "; ".join(f"{name} {spec.description}" for name, spec in FORMATS.items())
    + ".",
)
@click.option(
    "-m",
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="ONNX model or checkpoint (default: the bundled model).",
)
@click.option(
    "-b",
    "--backend",
    default="auto",
    show_default=True,
    type=click.Choice(BACKEND_CHOICES),
)
@click.option("-d", "--device", default="auto", show_default=True, help="auto, cpu, cuda[:N]")
@click.option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    default="fp32",
    show_default=True,
    help="Network precision on the CPU: bf16 (AMX / AVX512-BF16) and int8 (AMX / VNNI; a "
    "quantized model is made and cached on first use) run on OpenVINO; auto picks bf16 where "
    "the CPU has a bf16 unit, else fp32 (sss-rt info shows which).",
)
@click.option(
    "--radius", type=click.IntRange(min=0), default=None, help="Guided filter radius (default 5)."
)
@click.option(
    "--eps",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Guided filter epsilon for a [0,1] guide (default 0.01).",
)
@click.option(
    "--preprocess",
    type=click.Choice(MODES),
    default="exact",
    show_default=True,
    help="Post-processing: exact guided filter + PCA; fast (subsampled guided filter, "
    "approximate); matlab (the authors' MATLAB rules).",
)
@click.option(
    "--max-megapixels",
    type=click.FloatRange(min=0, min_open=True),
    default=64.0,
    show_default=True,
    help="Size limit; larger images are downscaled (embedding resized back) or refused. "
    "At most 2 MP for whole-graph execution on the CPU (--no-tiling).",
)
@click.option(
    "--tile-megapixels",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Images above this size run split (the network's trunk once, its head per band of "
    "rows, in bounded memory; every mode, the ONNX Runtime and torch backends); the default "
    "splits all, as it is also the faster path.",
)
@click.option("--no-tiling", is_flag=True, help="Run the whole graph at once (much more memory).")
@click.option(
    "--large",
    type=click.Choice(["downscale", "refuse"]),
    default="downscale",
    show_default=True,
    help="What to do with images above --max-megapixels.",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads.")
@click.option(
    "--features",
    "with_features",
    is_flag=True,
    help="Also store the raw 128-d features in the npz (about 512 MB per megapixel).",
)
@click.option("--float16", is_flag=True, help="Store raw features (npy/npz/mat) as float16.")
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--examples", is_flag=True, help="Also extract the bundled example images.")
def extract(
    inputs,
    out_dir,
    formats,
    model,
    backend,
    device,
    precision,
    radius,
    eps,
    preprocess,
    max_megapixels,
    tile_megapixels,
    no_tiling,
    large,
    threads,
    with_features,
    float16,
    recursive,
    overwrite,
    quiet,
    examples,
) -> None:
    """Extract semantic features of INPUTS (image files and folders) into OUTPUT.

    Existing outputs are skipped unless --overwrite. A file that fails is reported and the run
    goes on; the exit code is 1 if any file failed. The output folder is never read as input.
    Ctrl-C or SIGTERM stops after the file in progress is cleaned up (exit 130 / 143); a full or
    read-only output folder stops the run (exit 6). A re-run resumes.
    """
    from tqdm import tqdm

    from sss_rt.batch import BatchSummary, extract_to
    from sss_rt.extractor import Extractor, examples_dir
    from sss_rt.io.images import find_images

    if examples:
        inputs = (*inputs, examples_dir())
    if not inputs:
        raise click.UsageError("give image files or folders (or --examples)")
    tasks, ignored = find_images(inputs, recursive=recursive, exclude=out_dir)
    if not tasks:
        raise SssRtError("no images found in the given inputs")
    formats = tuple(dict.fromkeys(formats))
    summary = BatchSummary()
    stop: BaseException | None = None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with Extractor(
            model,
            backend=backend,
            device=device,
            precision=precision,
            radius=radius,
            eps=eps,
            preprocess=preprocess,
            threads=threads,
            max_megapixels=max_megapixels,
            large=large,
            tile_megapixels=None if no_tiling else tile_megapixels,
        ) as extractor:
            bar = tqdm(total=len(tasks), unit="img", disable=quiet or not sys.stderr.isatty())
            try:
                for outcome in extract_to(
                    extractor, tasks, out_dir, formats, overwrite=overwrite, float16=float16,
                    features=with_features,
                ):  # fmt: skip
                    summary.add(outcome)
                    if outcome.status == "failed":
                        message = outcome.message
                        if not message.startswith(str(outcome.task.source)):
                            message = f"{outcome.task.source}: {message}"
                        bar.write(f"failed: {message}", file=sys.stderr)
                    bar.update(1)
            except (KeyboardInterrupt, Terminated, OutputError) as exc:
                stop = exc
            finally:
                bar.close()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if not quiet or stop is not None:
        parts = [
            f"{summary.done} extracted",
            f"{summary.skipped} skipped (already done)",
            f"{len(summary.failed)} failed",
        ]
        if ignored:
            parts.append(f"{ignored} non-image files ignored")
        if stop is not None:
            parts.append(f"{len(tasks) - summary.done - summary.skipped - len(summary.failed)} "
                         "left to do (a re-run resumes)")  # fmt: skip
        click.echo(", ".join(parts), err=True)
    if isinstance(stop, OutputError):
        raise stop
    if isinstance(stop, Terminated):
        click.echo("terminated", err=True)
        sys.exit(EXIT_TERMINATED)
    if isinstance(stop, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if summary.failed:
        sys.exit(EXIT_SOME_FAILED)


class Terminated(BaseException):
    """SIGTERM, raised where the batch is (its file in progress is cleaned up on the way)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()
