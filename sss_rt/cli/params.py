"""Parameter types shared by the commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from sss_rt.backends import BACKEND_CHOICES
from sss_rt.extractor import (
    DEFAULT_MAX_MEGAPIXELS,
    DEFAULT_TILE_MEGAPIXELS,
    LARGE_POLICIES,
)
from sss_rt.postprocess.config import DEFAULT_MODE, MODES, PostprocessConfig
from sss_rt.precision import DEFAULT_PRECISION, PRECISION_CHOICES


def parse_hw(text: str) -> tuple[int, int]:
    """``"768x1024"`` (or ``768×1024``) → (768, 1024)."""
    m = re.fullmatch(r"\s*(\d+)\s*[x×X,]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"expected HEIGHTxWIDTH, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def hw_callback(ctx: click.Context, param: click.Parameter, value):
    """Click callback: one ``HxW`` string, or a tuple of them (``multiple=True``)."""
    try:
        if isinstance(value, tuple):
            return tuple(parse_hw(v) for v in value)
        return parse_hw(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def batch_arguments(command):
    """INPUTS (files and folders) and -o/--output, of every command that writes one set of
    outputs per input in a mirrored tree."""
    command = click.option(
        "-o",
        "--output",
        "out_dir",
        required=True,
        type=click.Path(path_type=Path),
        help="Output folder; the input folders' tree is mirrored inside it.",
    )(command)
    # plain strings: a filesystem URI (s3://…, for --ray) must keep its "//"
    return click.argument("inputs", nargs=-1, type=click.STRING)(command)


_EXTRACTOR_OPTIONS = [
    click.option(
        "-m",
        "--model",
        type=click.Path(path_type=Path),
        default=None,
        help="ONNX model or checkpoint (default: the bundled model).",
    ),
    click.option(
        "-b",
        "--backend",
        default="auto",
        show_default=True,
        type=click.Choice(BACKEND_CHOICES),
    ),
    click.option("-d", "--device", default="auto", show_default=True, help="auto, cpu, cuda[:N]"),
    click.option(
        "--precision",
        type=click.Choice(PRECISION_CHOICES),
        default=DEFAULT_PRECISION,
        show_default=True,
        help="Network precision on the CPU: bf16 (AMX / AVX512-BF16) and int8 (AMX / VNNI; a "
        "quantized model is made and cached on first use) run on OpenVINO; auto picks bf16 where "
        "the CPU has a bf16 unit, else fp32 (sss-rt info shows which).",
    ),
    click.option(
        "--radius",
        type=click.IntRange(min=0),
        default=None,
        help=f"Guided filter radius (default {PostprocessConfig.radius}).",
    ),
    click.option(
        "--eps",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help=f"Guided filter epsilon for a [0,1] guide (default {PostprocessConfig.eps}).",
    ),
    click.option(
        "--postprocess",
        type=click.Choice(MODES),
        default=None,
        show_default=DEFAULT_MODE,
        help="Post-processing mode: exact guided filter + PCA; fast (subsampled guided filter, "
        "approximate); matlab (the authors' MATLAB rules).",
    ),
    click.option(
        "--preprocess",
        "preprocess_deprecated",
        type=click.Choice(MODES),
        default=None,
        hidden=True,
        help="Deprecated spelling of --postprocess.",
    ),
    click.option(
        "--max-megapixels",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_MAX_MEGAPIXELS,
        show_default=True,
        help="Size limit; larger images are downscaled (embedding resized back) or refused. "
        "At most 2 MP for whole-graph execution on the CPU (--no-tiling).",
    ),
    click.option(
        "--tile-megapixels",
        type=click.FloatRange(min=0),
        default=DEFAULT_TILE_MEGAPIXELS,
        show_default=True,
        help="Images above this size run split (the network's trunk once, its head per band of "
        "rows, in bounded memory; every mode, the ONNX Runtime and torch backends); the default "
        "splits all, as it is also the faster path.",
    ),
    click.option(
        "--no-tiling", is_flag=True, help="Run the whole graph at once (much more memory)."
    ),
    click.option(
        "--large",
        type=click.Choice(LARGE_POLICIES),
        default=LARGE_POLICIES[0],
        show_default=True,
        help="What to do with images above --max-megapixels.",
    ),
    click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads."),
]


def extractor_options(command):
    """The options that configure the :class:`~sss_rt.Extractor` (extract, segment)."""
    for option in reversed(_EXTRACTOR_OPTIONS):
        command = option(command)
    return command


def _postprocess_mode(opts: dict[str, Any]) -> str:
    """``--postprocess``, or its deprecated spelling ``--preprocess`` (with a note)."""
    old = opts.get("preprocess_deprecated")
    if old is None:
        return opts["postprocess"] or DEFAULT_MODE
    if opts["postprocess"] is not None:
        raise click.UsageError("give --postprocess only (--preprocess is its deprecated name)")
    click.echo("note: --preprocess is deprecated; it is called --postprocess now", err=True)
    return old


def extractor_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Extractor keyword arguments from the values of :func:`extractor_options`."""
    return {
        "model": opts["model"],
        "backend": opts["backend"],
        "device": opts["device"],
        "precision": opts["precision"],
        "radius": opts["radius"],
        "eps": opts["eps"],
        "postprocess": _postprocess_mode(opts),
        "threads": opts["threads"],
        "max_megapixels": opts["max_megapixels"],
        "large": opts["large"],
        "tile_megapixels": None if opts["no_tiling"] else opts["tile_megapixels"],
    }
