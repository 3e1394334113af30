"""Folder extraction: inputs → mirrored output tree, skipping finished files, never half-writing."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sss_rt.errors import ImageError, OutputError, SssRtError
from sss_rt.extractor import Extractor
from sss_rt.io.images import ImageTask
from sss_rt.io.writers import FORMATS, write_output

#: write errors that no later file would escape: the run stops with one line
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class Progress(Protocol):
    """Where a batch reports what it is doing: the file it starts, then stages within it."""

    def file(self, task: ImageTask) -> None: ...

    def stage(self, name: str) -> None: ...


def ensure_output_folder(out_dir: Path) -> None:
    """Make ``out_dir`` (and its parents) and prove a file can be written there, once, before
    any work: an unusable output folder — a file in the way, a path under a file, a forbidden,
    read-only or full file system — is one ``OutputError`` (exit 6), not one error per input."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a folder (choose another -o)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{out_dir}: cannot create the output folder ({exc.strerror or exc})"
        ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".sss-rt-probe-", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"{out_dir}: cannot write in the output folder ({exc.strerror or exc})"
        ) from None


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


def process_tasks(
    tasks: Sequence[ImageTask],
    out_dir: Path,
    paths_for: Callable[[ImageTask], dict[str, Path]],
    produce: Callable[[ImageTask, dict[str, Path]], None],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Iterator[FileOutcome]:
    """The batch rules, for any job: a task whose outputs all exist is skipped unless
    ``overwrite``; ``produce(task, paths)`` writes the outputs still missing (each atomically);
    a failure on one file (bad input, a write error of its own) is its outcome and the run goes
    on; an output folder that cannot take any file (disk full, read-only, forbidden) raises
    ``OutputError``. ``progress``: told of each file as it starts (and its stages, by the
    job)."""
    for task in tasks:
        paths = paths_for(task)
        if not overwrite and all(p.exists() for p in paths.values()):
            yield FileOutcome(task, "skipped")
            continue
        if progress is not None:
            progress.file(task)
        try:
            produce(task, {k: p for k, p in paths.items() if overwrite or not p.exists()})
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


def extract_to(
    extractor: Extractor,
    tasks: Sequence[ImageTask],
    out_dir: Path,
    formats: Sequence[str],
    *,
    overwrite: bool = False,
    float16: bool = False,
    features: bool = False,
    load: Callable[[ImageTask], Any] | None = None,
    progress: Progress | None = None,
) -> Iterator[FileOutcome]:
    """Extract each task's image and write every format; yields one outcome per task (the
    rules of :func:`process_tasks`). ``features``: also store the raw features in the npz.
    ``load``: how a task's image is read (default: the Extractor reads ``task.source``)."""
    need_features = any(FORMATS[f].needs_features for f in formats) or (
        features and "npz" in formats
    )

    def produce(task: ImageTask, paths: dict[str, Path]) -> None:
        image = load(task) if load is not None else task.source
        result = extractor.extract(image, return_features=need_features)
        for fmt, path in paths.items():
            write_output(
                fmt, path, image=result.image, embedding=result.embedding,
                features=result.features, float16=float16,
            )  # fmt: skip

    return process_tasks(
        tasks, out_dir, lambda t: output_paths(t, out_dir, formats), produce,
        overwrite=overwrite, progress=progress,
    )  # fmt: skip


def layer_paths(task: ImageTask, out_dir: Path, layers: int, pngs: bool) -> dict[str, Path]:
    """Where ``segment`` writes a task's layers (``x.layers.npz``, ``x.layers.png`` and, with
    ``pngs``, ``x.layer-K.png`` for K < layers)."""
    from sss_rt.io import layers as io_layers

    base = out_dir / task.relative_stem
    paths = {
        "npz": base.with_name(base.name + io_layers.NPZ_SUFFIX),
        "overview": base.with_name(base.name + io_layers.OVERVIEW_SUFFIX),
    }
    if pngs:
        for k in range(layers):
            paths[f"layer-{k}"] = base.with_name(base.name + io_layers.layer_suffix(k))
    return paths


def segment_to(
    segmenter: Any,
    tasks: Sequence[ImageTask],
    out_dir: Path,
    *,
    layer_pngs: bool = False,
    photos: Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Iterator[FileOutcome]:
    """Soft layers of each task (a photo, or extracted features: ``.sss.png`` / ``.npz``), the
    rules of :func:`process_tasks`. ``photos``: where the photos of ``.npz`` inputs are (the
    inputs' tree mirrored; default: beside each file)."""
    from sss_rt.io import layers as io_layers

    count = segmenter.config.layers
    stage = progress.stage if progress is not None else None

    def produce(task: ImageTask, paths: dict[str, Path]) -> None:
        kind = io_layers.own_output_kind(task.source)
        if kind is not None:  # named explicitly: said, never segmented as a photo
            raise ImageError(f"{task.source}: {kind}; segment its .npz or .sss.png instead")
        if io_layers.is_feature_file(task.source):
            photo = None
            if photos is not None and task.source.name.lower().endswith(".npz"):
                photo = _photo_in(photos, task.relative_stem)
            image, embedding = io_layers.read_features(task.source, photo)
            result = segmenter.segment(image, embedding, source=task.source, progress=stage)
        else:
            result = segmenter.segment(task.source, progress=stage)
        alphas = result.alphas
        for name, path in paths.items():
            if name == "npz":
                io_layers.write_npz(path, alphas, result.embedding)
            elif name == "overview":
                io_layers.write_overview(path, result.image, alphas)
            else:
                k = int(name.split("-")[1])
                if k < alphas.shape[2]:
                    io_layers.write_layer(path, result.image, alphas[..., k])

    def paths_for(task: ImageTask) -> dict[str, Path]:
        return layer_paths(task, out_dir, count, layer_pngs)

    return process_tasks(tasks, out_dir, paths_for, produce, overwrite=overwrite, progress=progress)


def _photo_in(folder: Path, stem: Path) -> Path:
    from sss_rt.io.layers import find_photo

    photo = find_photo(folder / stem)
    if photo is None:
        raise ImageError(
            f"no photo {folder / stem}.* for its features (looked in --photos {folder})"
        )
    return photo
