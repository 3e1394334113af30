"""Extraction over many machines on Ray Data, with the same outputs and rules as ``extract``.

Ray Data reads only the list of inputs (paths and their output stems, found on the driver:
local files and folders, or URIs of any filesystem pyarrow opens — ``s3://bucket/prefix``,
``gs://…``, ``hdfs://…``, ``file:///…`` — whose image files each actor reads itself);
``map_batches`` runs :class:`ExtractWorker`, a callable class holding one :class:`Extractor`
per actor (loaded once, in its constructor), which decodes, extracts and writes each output
itself through :func:`sss_rt.batch.extract_to` — the CLI's own code: the same names, mirrored
tree, atomic writes and skipping of finished outputs. Only paths and small status rows cross
Ray's object store. A failing file is a ``failed`` row, never a failed job; Ray retries the
rows of an actor that dies (a finished output is then skipped, so nothing is written twice).

``ray`` is optional: ``pip install "sss-rt[ray]"``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sss_rt.errors import BackendUnavailableError, OutputError

#: memory declared to Ray per actor: the split path's measured peak with a 24 MP image is
#: 3.98 GB (benchmarks/RESULTS-large.md); larger images are downscaled to --max-megapixels and
#: run split, in bounded memory, so the scheduler never puts more actors on a node than fit
ACTOR_MEMORY_BYTES = 4 << 30

MANIFEST_COLUMNS = ("source", "status", "message", "bytes", "seconds")


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise BackendUnavailableError("--ray needs Ray Data: pip install 'sss-rt[ray]'") from None
    return ray


class ExtractWorker:
    """One Ray actor's extraction: built once per actor, called on batches of input rows."""

    def __init__(
        self,
        out_dir: str,
        formats: Sequence[str],
        extractor_options: dict[str, Any],
        overwrite: bool = False,
        float16: bool = False,
        features: bool = False,
    ) -> None:
        from sss_rt.extractor import Extractor

        self.out_dir = Path(out_dir)
        self.formats = tuple(formats)
        self.flags = {"overwrite": overwrite, "float16": float16, "features": features}
        self.extractor = Extractor(**extractor_options)

    def _load_remote(self, uri: str) -> Any:
        """A URI's image, read through pyarrow's filesystem for it and decoded here."""
        from pyarrow import fs as pafs

        from sss_rt.errors import ImageError
        from sss_rt.io.images import decode_image

        try:
            filesystem, path = pafs.FileSystem.from_uri(uri)
            with filesystem.open_input_stream(path) as stream:
                data = stream.read()
        except (OSError, ValueError) as exc:
            raise ImageError(f"{uri}: cannot be read ({exc})") from None
        ex = self.extractor
        return decode_image(data, uri, ex.max_megapixels, ex.large)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from sss_rt.batch import extract_to, output_paths
        from sss_rt.io.images import ImageTask

        rows: dict[str, list] = {name: [] for name in MANIFEST_COLUMNS}
        for source, stem in zip(batch["source"], batch["stem"], strict=True):
            source = str(source)
            remote = "://" in source
            task = ImageTask(Path(str(stem)) if remote else Path(source), Path(str(stem)))
            load = (lambda _task, uri=source: self._load_remote(uri)) if remote else None
            t0 = time.perf_counter()
            try:
                flags = self.flags
                jobs = extract_to(
                    self.extractor, [task], self.out_dir, self.formats, load=load,
                    overwrite=flags["overwrite"], float16=flags["float16"],
                    features=flags["features"],
                )  # fmt: skip
                outcome = next(iter(jobs))
                status, message = outcome.status, outcome.message
            except OutputError as exc:  # this node's output folder refuses writes
                status, message = "failed", str(exc)
            paths = output_paths(task, self.out_dir, self.formats).values()
            rows["source"].append(str(source))
            rows["status"].append(status)
            rows["message"].append(message)
            rows["bytes"].append(sum(p.stat().st_size for p in paths if p.exists()))
            rows["seconds"].append(time.perf_counter() - t0)
        return rows


def _quiet_ray(ray: Any) -> None:
    """A successful run prints sss-rt's summary, not Ray's logs: Ray Data's plan and progress
    (INFO) and the core's note on restartable actors (printed at error level, though expected)
    stay out of stderr unless the user set their own levels (``RAY_BACKEND_LOG_LEVEL``). What
    remains is the core's one line saying that level was set. Failures reach stderr through
    sss-rt's own ``failed:`` lines and exit code."""
    import logging

    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data"):  # progress, when not on a terminal, is logged at INFO
        logging.getLogger(name).setLevel(logging.WARNING)


def extract_dataset(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    formats: Sequence[str] = ("png", "npz"),
    *,
    address: str | None = None,
    actors: int = 2,
    threads: int = 1,
    gpus: int = 0,
    overwrite: bool = False,
    float16: bool = False,
    features: bool = False,
    recursive: bool = True,
    manifest: str | os.PathLike[str] | None = None,
    extractor_options: dict[str, Any] | None = None,
    actor_memory: int = ACTOR_MEMORY_BYTES,
    worker: type = ExtractWorker,
) -> list[dict[str, Any]]:
    """Extract ``inputs`` (files and folders) into ``out_dir`` on Ray Data; one manifest row per
    input (``source``, ``status`` done / skipped / failed, ``message``, ``bytes``,
    ``seconds``), also written to ``manifest`` (Parquet; default ``out_dir/manifest.parquet``).

    ``address``: None or ``"local"`` starts a Ray instance on this machine; ``"auto"`` or
    ``"ray://…"`` joins a cluster. ``actors`` actors of ``threads`` CPU threads each (and
    ``gpus`` GPUs each, on GPU nodes); ``extractor_options`` as for :class:`Extractor`;
    ``actor_memory``: bytes declared to Ray per actor; ``worker``: the actor class (an
    :class:`ExtractWorker` or a subclass).
    """
    from sss_rt.io.images import find_images

    ray = import_ray()
    if actors < 1 or threads < 1 or gpus < 0:
        raise ValueError("actors and threads must be >= 1, gpus >= 0")
    out = Path(out_dir)
    local = [i for i in inputs if "://" not in os.fspath(i)]
    tasks, _ = find_images(local, recursive=recursive, exclude=out) if local else ([], 0)
    items = [{"source": str(t.source), "stem": str(t.relative_stem)} for t in tasks]
    for uri in (os.fspath(i) for i in inputs if "://" in os.fspath(i)):
        items += remote_inputs(uri, recursive)
    _quiet_ray(ray)
    if not ray.is_initialized():
        ray.init(
            address=None if address in (None, "local") else address,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    options = {**(extractor_options or {}), "threads": threads}
    if gpus:
        options.setdefault("device", "cuda")
    if not items:
        return []
    ds = ray.data.from_items(items).map_batches(
        worker,
        fn_constructor_kwargs={
            "out_dir": str(out),
            "formats": list(formats),
            "extractor_options": options,
            "overwrite": overwrite,
            "float16": float16,
            "features": features,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        num_gpus=gpus,
        memory=actor_memory,
    )  # Ray Data restarts an actor that dies and retries its rows (tested)
    rows = ds.take_all()
    by_source = {r["source"]: r for r in rows}  # a retried row: its last outcome counts
    ordered = [by_source[i["source"]] for i in items if i["source"] in by_source]
    write_manifest(Path(manifest) if manifest else out / "manifest.parquet", ordered)
    return ordered


def remote_inputs(uri: str, recursive: bool = True) -> list[dict[str, str]]:
    """The image files under a filesystem URI (or the one file it names), with output stems
    mirroring the tree below it, listed through pyarrow's filesystems."""
    from pyarrow import fs as pafs

    from sss_rt.errors import ImageError
    from sss_rt.io.images import is_image_path

    try:
        filesystem, root = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(root)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{uri}: cannot be listed ({exc})") from None
    if info.type == pafs.FileType.NotFound:
        raise ImageError(f"{uri}: no such file or folder")
    scheme = uri.split("://", 1)[0]
    if info.type == pafs.FileType.File:
        return [{"source": uri, "stem": Path(root).stem}]
    found = filesystem.get_file_info(pafs.FileSelector(root, recursive=recursive))
    base = Path(root)
    items = []
    for f in sorted(found, key=lambda f: f.path):
        if f.type == pafs.FileType.File and is_image_path(Path(f.path)):
            rel = Path(f.path).relative_to(base)
            items.append({"source": f"{scheme}://{f.path}", "stem": str(rel.with_suffix(""))})
    return items


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    """The manifest as Parquet, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sss_rt.io.writers import atomic_path

    table = pa.table({name: [r[name] for r in rows] for name in MANIFEST_COLUMNS})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
