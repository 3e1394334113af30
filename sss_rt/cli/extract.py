"""``sss-rt extract``: images and folders → feature files."""

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
from sss_rt.io.writers import FORMATS


@click.command()
@batch_arguments
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
@extractor_options
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
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run on Ray Data: alone, a local Ray instance; 'auto' or 'ray://…' an existing "
    "cluster (pip install 'sss-rt[ray]'). Writes OUTPUT/manifest.parquet.",
)
@click.option(
    "--actors", type=click.IntRange(min=1), default=2, show_default=True,
    help="With --ray: extraction actors (each with --threads threads, default 1).",
)  # fmt: skip
@click.option("--gpus-per-actor", type=click.IntRange(min=0), default=0, show_default=True)
def extract(
    inputs,
    out_dir,
    formats,
    with_features,
    float16,
    recursive,
    overwrite,
    quiet,
    examples,
    ray_address,
    actors,
    gpus_per_actor,
    **extractor_opts,
) -> None:
    """Extract semantic features of INPUTS (image files and folders) into OUTPUT.

    Existing outputs are skipped unless --overwrite. A file that fails is reported and the run
    goes on; the exit code is 1 if any file failed. The output folder is never read as input.
    Ctrl-C or SIGTERM stops after the file in progress is cleaned up (exit 130 / 143); a full or
    read-only output folder stops the run (exit 6). A re-run resumes.
    """
    from sss_rt.batch import Progress, ensure_output_folder, extract_to
    from sss_rt.extractor import Extractor, examples_dir
    from sss_rt.io.images import find_images

    if ray_address is not None and not _is_ray_address(ray_address):
        # "--ray photos/": click took the first input as the address
        inputs, ray_address = (ray_address, *inputs), "local"
    if not inputs and not examples:
        raise click.UsageError("give image files or folders (or --examples)")
    formats = tuple(dict.fromkeys(formats))
    if ray_address is not None:  # inputs may be filesystem URIs there: listed by Ray's driver
        _extract_on_ray(
            (*inputs, *([examples_dir()] if examples else [])), out_dir, formats, ray_address,
            actors, gpus_per_actor, recursive,
            overwrite, float16, with_features, quiet, extractor_opts,
        )  # fmt: skip
        return
    tasks, ignored = (
        find_images(inputs, recursive=recursive, exclude=out_dir) if inputs else ([], 0)
    )
    if examples:  # the bundled photos; the folder's licence file is not the user's to be told of
        tasks += find_images([examples_dir()], exclude=out_dir)[0]
    if not tasks:
        raise ImageError("no images found in the given inputs")
    ensure_output_folder(out_dir)

    def worker() -> Extractor:
        return Extractor(**extractor_kwargs(extractor_opts))

    def outcomes(ex: Extractor, progress: Progress):
        return extract_to(
            ex, tasks, out_dir, formats, overwrite=overwrite, float16=float16,
            features=with_features, progress=progress,
        )  # fmt: skip

    run_batch(
        len(tasks),
        worker,
        outcomes,
        quiet=quiet,
        done_word="extracted",
        ignored=ignored,
    )


def _extract_on_ray(
    inputs, out_dir, formats, address, actors, gpus, recursive, overwrite, float16, features,
    quiet, extractor_opts,
) -> None:  # fmt: skip
    """``extract --ray``: the same job on Ray Data (sss_rt.distributed); exit 1 if any failed."""
    import sys

    from sss_rt.distributed import extract_dataset

    options = extractor_kwargs(extractor_opts)
    threads = options.pop("threads") or 1
    rows = extract_dataset(
        inputs, out_dir, formats, address=address, actors=actors, threads=threads, gpus=gpus,
        overwrite=overwrite, float16=float16, features=features, recursive=recursive,
        extractor_options=options,
    )  # fmt: skip
    if not rows:
        raise ImageError("no images found in the given inputs")
    failed = [r for r in rows if r["status"] == "failed"]
    for r in failed:
        click.echo(f"failed: {r['source']}: {r['message']}", err=True)
    if not quiet:
        done = sum(r["status"] == "done" for r in rows)
        skipped = sum(r["status"] == "skipped" for r in rows)
        click.echo(
            f"{done} extracted, {skipped} skipped (already done), {len(failed)} failed "
            f"(manifest: {out_dir / 'manifest.parquet'})",
            err=True,
        )
    if failed:
        sys.exit(1)


def _is_ray_address(value: str) -> bool:
    """local, auto, ray://HOST:PORT or HOST:PORT — not a path, not a filesystem URI."""
    if value in ("local", "auto") or value.startswith("ray://"):
        return True
    return "://" not in value and ":" in value and not Path(value).exists()
