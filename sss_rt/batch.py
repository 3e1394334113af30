"""Folder extraction: inputs → mirrored output tree, skipping finished files, never half-writing."""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sss_rt.errors import OutputError, SssRtError
from sss_rt.extractor import Extractor
from sss_rt.io.images import ImageTask
from sss_rt.io.writers import FORMATS, write_output

#: write errors that no later file would escape: the run stops with one line
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def output_paths(task: ImageTask, out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    base = out_dir / task.relative_stem
    return {fmt: base.with_name(base.name + FORMATS[fmt].suffix) for fmt in formats}


@dataclass
class FileOutcome:
    task: ImageTask
    status: str  # "done", "skipped" or "failed"
    message: str = ""


@dataclass
class BatchSummary:
    done: int = 0
    skipped: int = 0
    failed: list[FileOutcome] = field(default_factory=list)

    def add(self, outcome: FileOutcome) -> None:
        if outcome.status == "done":
            self.done += 1
        elif outcome.status == "skipped":
            self.skipped += 1
        else:
            self.failed.append(outcome)


def extract_to(
    extractor: Extractor,
    tasks: Sequence[ImageTask],
    out_dir: Path,
    formats: Sequence[str],
    *,
    overwrite: bool = False,
    float16: bool = False,
    features: bool = False,
) -> Iterator[FileOutcome]:
    """Extract each task's image and write every format; yields one outcome per task.

    A task whose outputs all exist is skipped unless ``overwrite``. A failure on one file (bad
    image, a write error of its own) is reported in its outcome and the run goes on; an output
    folder that cannot take any file (disk full, read-only, forbidden) raises ``OutputError``.
    ``features``: also store the raw features in the npz.
    """
    need_features = any(FORMATS[f].needs_features for f in formats) or (
        features and "npz" in formats
    )
    for task in tasks:
        paths = output_paths(task, out_dir, formats)
        if not overwrite and all(p.exists() for p in paths.values()):
            yield FileOutcome(task, "skipped")
            continue
        try:
            result = extractor.extract(task.source, return_features=need_features)
            for fmt, path in paths.items():
                if path.exists() and not overwrite:
                    continue
                write_output(
                    fmt,
                    path,
                    image=result.image,
                    embedding=result.embedding,
                    features=result.features,
                    float16=float16,
                )
        except OSError as exc:
            if exc.errno in FATAL_ERRNOS:
                raise OutputError(
                    f"cannot write to {out_dir}: {exc.strerror or exc} (stopped)"
                ) from None
            yield FileOutcome(task, "failed", str(exc))
            continue
        except (SssRtError, ValueError, MemoryError) as exc:
            yield FileOutcome(task, "failed", str(exc) or type(exc).__name__)
            continue
        yield FileOutcome(task, "done")
