"""The ``sss-rt`` command line: a thin layer over the Python API."""

from __future__ import annotations

import sys

import click

from sss_rt._version import __version__
from sss_rt.cli.bench import bench
from sss_rt.cli.build_engine import build_engine
from sss_rt.cli.compare import compare
from sss_rt.cli.evaluate import evaluate
from sss_rt.cli.export import export
from sss_rt.cli.extract import extract
from sss_rt.cli.import_authors import import_authors
from sss_rt.cli.info import info
from sss_rt.cli.quantize import quantize
from sss_rt.cli.segment import segment
from sss_rt.cli.train import train
from sss_rt.errors import SssRtError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sss-rt")
def cli() -> None:
    """Semantic feature descriptors for Semantic Soft Segmentation."""


for command in (
    extract,
    segment,
    export,
    import_authors,
    quantize,
    info,
    build_engine,
    compare,
    train,
    evaluate,
    bench,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit with their code, never a traceback."""
    try:
        cli.main(args=argv, prog_name="sss-rt", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SssRtError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(0)
