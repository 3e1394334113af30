"""Folder extraction: inputs → mirrored output tree, skipping finished files, never half-writing."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sss_rt.errors import SssRtError
from sss_rt.extractor import Extractor
from sss_rt.io.images import ImageTask
from sss_rt.io.writers import FORMATS, write_output


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
) -> Iterator[FileOutcome]:
    """Extract each task's image and write every format; yields one outcome per task.

    A task whose outputs all exist is skipped unless ``overwrite``. A failure on one file (bad
    image, write error) is reported in its outcome and the run goes on.
    """
    need_features = any(FORMATS[f].needs_features for f in formats)
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
        except (SssRtError, OSError, ValueError) as exc:
            yield FileOutcome(task, "failed", str(exc))
            continue
        yield FileOutcome(task, "done")
