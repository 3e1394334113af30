"""Running a batch from the command line: progress bar, per-file failures, the summary line and
the exit codes — the same for every command that writes one set of outputs per input."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import click

from sss_rt.batch import BatchSummary, FileOutcome, Progress
from sss_rt.errors import OutputError

EXIT_SOME_FAILED = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(BaseException):
    """SIGTERM, raised where the batch is (its file in progress is cleaned up on the way)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


class BarProgress:
    """The batch's :class:`~sss_rt.batch.Progress`: the file in progress and its stage on the
    bar (``bar``: a tqdm bar, or None where nothing is drawn), and each file's seconds."""

    def __init__(self, bar: Any):
        self.bar, self.name, self.started = bar, "", time.perf_counter()

    def file(self, task: Any) -> None:
        self.name, self.started = str(task.source.name), time.perf_counter()
        if self.bar is not None:
            self.bar.set_postfix_str(self.name, refresh=True)

    def stage(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.name}: {name}", refresh=True)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def run_batch(
    total: int,
    worker: Callable[[], AbstractContextManager],
    outcomes: Callable[[object, Progress], Iterator[FileOutcome]],
    *,
    quiet: bool,
    done_word: str,
    ignored: int = 0,
    notes: list[str] | None = None,
) -> None:
    """Open ``worker()`` (e.g. an Extractor), run ``outcomes(worker, progress)``, print the
    summary and exit with the batch's code: 1 if any file failed, 130 / 143 on Ctrl-C /
    SIGTERM (after the file in progress is cleaned up), 6 if the output folder refuses writes.

    Progress on a terminal: a bar with the file in progress and its stage (``progress``, which
    the job tells); elsewhere (logs, CI, Ray workers) one line per finished file on stderr.
    ``quiet``: failures and the summary of a stopped run only."""
    from tqdm import tqdm

    summary = BatchSummary()
    stop: BaseException | None = None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with worker() as opened:
            tty = sys.stderr.isatty()
            bar = tqdm(total=total, unit="img", disable=quiet or not tty)
            progress = BarProgress(bar if tty and not quiet else None)
            try:
                for outcome in outcomes(opened, progress):
                    summary.add(outcome)
                    if outcome.status == "failed":
                        message = outcome.message
                        if not message.startswith(str(outcome.task.source)):
                            message = f"{outcome.task.source}: {message}"
                        bar.write(f"failed: {message}", file=sys.stderr)
                    elif not tty and not quiet:
                        spent = f" ({progress.seconds():.1f} s)" if outcome.status == "done" else ""
                        click.echo(f"{outcome.status}: {outcome.task.source}{spent}", err=True)
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
            f"{summary.done} {done_word}",
            f"{summary.skipped} skipped (already done)",
            f"{len(summary.failed)} failed",
        ]
        if ignored:
            parts.append(f"{ignored} non-image files ignored")
        parts += notes or []
        if stop is not None:
            parts.append(f"{total - summary.done - summary.skipped - len(summary.failed)} "
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
