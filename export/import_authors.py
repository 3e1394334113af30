"""Import the authors' TensorFlow 1 checkpoint as an sss-rt ONNX model (no TensorFlow needed).

The checkpoint (their released ``model`` folder, or any checkpoint of the same graph) is read
with :class:`~sss_rt.export.tf_checkpoint.CheckpointReader`; the 330 variables the network
reads (:func:`~sss_rt.families.authors_graph.variable_spec`) are checked by name, shape and
dtype — a missing or wrong one is one line naming it — and turned into the ONNX graph of
:func:`~sss_rt.families.authors_graph.build_onnx`. Optimizer slots, moving statistics, the
unused ASPP classifier and anything else in the checkpoint are ignored. The model's metadata
names the family (``authors``), the input mean and channel order (BGR), and the checkpoint's
sha256 (of its ``.index`` and ``.data-*`` files, in that order).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
from sss_rt.export.tf_checkpoint import CheckpointReader

from sss_rt.errors import ModelError, OutputError
from sss_rt.families.authors_graph import FEATURE_DIM, MEAN_BGR, build_onnx, variable_spec
from sss_rt.model_info import ModelInfo

BACKBONE = "deeplab-resnet101-caffe"


def read_authors_weights(checkpoint: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], Any]:
    """The network's 330 variables from a checkpoint (float32), and the reader.

    Raises
    ------
    sss_rt.errors.ModelError
        Not a readable checkpoint, or a variable missing, of the wrong shape or dtype, or
        not finite (the message names it).
    """
    reader = CheckpointReader(checkpoint)
    weights: dict[str, np.ndarray] = {}
    for name, shape in variable_spec().items():
        entry = reader.entries.get(name)
        if entry is None:
            raise ModelError(
                f"{reader.prefix}: variable {name} is missing: not a checkpoint of the "
                "authors' network"
            )
        if entry.shape != shape:
            raise ModelError(
                f"{reader.prefix}: variable {name} has shape {list(entry.shape)}, "
                f"the authors' network needs {list(shape)}"
            )
        if entry.dtype_name != "float32":
            raise ModelError(f"{reader.prefix}: variable {name} is {entry.dtype_name}, not float32")
        value = reader.read(name)
        if not np.isfinite(value).all():
            raise ModelError(f"{reader.prefix}: variable {name} has non-finite values")
        weights[name] = value
    return weights, reader


def checkpoint_sha256(reader: Any) -> str:
    """sha256 over the checkpoint's ``.index`` then each ``.data-*`` shard's bytes."""
    digest = hashlib.sha256()
    files = [Path(str(reader.prefix) + ".index")]
    files += [reader.data_path(i) for i in range(reader.num_shards)]
    for path in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def import_authors(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str]) -> ModelInfo:
    """Write the authors' network with a checkpoint's weights to ``output`` as ONNX.

    Parameters
    ----------
    checkpoint : str or os.PathLike
        A TensorFlow 1 Saver V2 checkpoint of the authors' extractor: its folder (with a
        ``checkpoint`` file), its prefix (``model/model.ckpt-60000``) or its ``.index`` file.
    output : str or os.PathLike
        The ONNX file to write (written under a temporary name, then renamed into place).

    Returns
    -------
    ModelInfo
        The model's metadata (family ``authors``).

    Raises
    ------
    sss_rt.errors.ModelError
        The checkpoint is unreadable or not of the authors' network.
    sss_rt.errors.OutputError
        ``output`` cannot be written.

    Examples
    --------
    >>> from sss_rt.export.import_authors import import_authors
    >>> info = import_authors("SIGGRAPH18SSS/model", "authors.onnx")  # doctest: +SKIP
    >>> info.family  # doctest: +SKIP
    'authors'
    """
    import onnx

    weights, reader = read_authors_weights(checkpoint)
    model = build_onnx(weights)
    info = ModelInfo(
        backbone=BACKBONE,
        feature_dim=FEATURE_DIM,
        mean=MEAN_BGR,
        std=(1.0, 1.0, 1.0),
        input_layout="NHWC uint8 RGB",
        family="authors",
        channel_order="BGR",
        source={
            "checkpoint": reader.prefix.name,
            "sha256": checkpoint_sha256(reader),
            "variables_read": len(weights),
            "variables_in_checkpoint": len(reader.entries),
        },
    )
    for key, value in info.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    output = Path(output)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, tmp)
        os.replace(tmp, output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from None
    return info
