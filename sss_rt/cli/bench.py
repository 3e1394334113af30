"""``sss-rt bench``: per-stage latency and peak memory of ``sss-rt extract``'s path, here
(the measurements: :mod:`sss_rt.benchmark`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sss_rt.backends import BACKENDS
from sss_rt.benchmark import STAGES, run_case
from sss_rt.cli.params import hw_callback


@click.command()
@click.option(
    "-m",
    "--model",
    type=click.Path(path_type=Path),
    default=None,
    help="ONNX model (default: the bundled one).",
)
@click.option(
    "-b",
    "--backend",
    "backends",
    multiple=True,
    default=("onnxruntime",),
    show_default=True,
    type=click.Choice(list(BACKENDS)),
)
@click.option(
    "-s",
    "--size",
    "sizes",
    multiple=True,
    default=("512x512",),
    show_default=True,
    callback=hw_callback,
    help="HEIGHTxWIDTH (repeatable).",
)
@click.option("--runs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True)
def bench(model, backends, sizes, runs, threads, as_json) -> None:
    """Time every stage of `sss-rt extract`'s path (median, p90) and its peak RSS, one
    process per case.

    The full comparison with peers is `python benchmarks/run.py` (see benchmarks/RESULTS.md).
    """
    from sss_rt.extractor import default_model_path

    path = str(model or default_model_path())
    results = [
        run_case(model=path, backend=be, height=h, width=w, runs=runs, threads=threads)
        for h, w in sizes
        for be in backends
    ]
    if as_json:
        click.echo(json.dumps({"results": results}, indent=2))
        return
    for r in results:
        if "error" in r:
            click.echo(f"{r.get('backend')} {r.get('height')}×{r.get('width')}: {r['error']}")
            continue
        stages = ", ".join(f"{s} {r['stages'][s]['median_s'] * 1000:.0f}" for s in STAGES)
        click.echo(
            f"{r['backend']} {r['size'][0]}×{r['size'][1]}: total "
            f"{r['total']['median_s'] * 1000:.0f} ms (p90 {r['total']['p90_s'] * 1000:.0f})"
            f" [{stages} ms], peak RSS {r['peak_rss_mb']:.0f} MB"
        )
