"""int8 post-training quantization of an sss-rt ONNX model, for ONNX Runtime's int8 kernels.

``quantize(model, out)`` writes a QDQ model: the network's convolutions with int8 weights (per
output channel, symmetric) and uint8 activations, their ranges calibrated (min/max) on
:func:`calibration_images` — the bundled example photos and synthetic scenes of the training
generator (a seed never used in training). Kept in float32, by measurement: the first conv and
the input tap (the image's own statistics; quantizing them alone took the embedding's p99 error
from 0.004 to 0.028) and the full-resolution head (the fuse projections and the last conv, which
the split path runs on the host from the initializers). The graph keeps its node names, so it
still splits into trunk and head.

The calibration images are saved beside the model (``OUT.calibration.npz``, ``images``: a list
of H×W×3 uint8 arrays under keys ``image_0`` …) so that the same set can calibrate a TensorRT
INT8 engine. :func:`quantized_model` keeps one quantized copy per source model in the user cache
(``$SSS_RT_CACHE`` or ``~/.cache/sss-rt``) for ``--precision int8``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from sss_rt.export.cache import cache_root, make_once

from sss_rt.errors import ModelError
from sss_rt.model_info import QUANTIZATION_KEY, sha256_file

#: kept in float32 (see the module's doc)
FLOAT_NODES = ("/conv1/Conv", "/taps.0/Conv", "/fuse_input/Conv", "/fuse_pool1/Conv", "/head/Conv")
CALIBRATION_SIZE = (288, 384)
SYNTHETIC_SEED = 7  # not a training seed
N_SYNTHETIC = 8
QUANTIZER_VERSION = 1  # part of the cache key: a change of recipe re-quantizes


def calibration_images(n_synthetic: int = N_SYNTHETIC) -> list[np.ndarray]:
    """The bundled example photos (resized to CALIBRATION_SIZE) and synthetic scenes."""
    import cv2

    from sss_rt.bundled import examples_dir
    from sss_rt.io.images import load_image
    from sss_rt.synthetic import SyntheticScenes

    h, w = CALIBRATION_SIZE
    images = [
        cv2.resize(load_image(p), (w, h), interpolation=cv2.INTER_AREA)
        for p in sorted(examples_dir().glob("*.jpg"))
    ]
    scenes = SyntheticScenes((h, w), seed=SYNTHETIC_SEED)
    images += [scenes[i][0] for i in range(n_synthetic)]
    return images


def quantize(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    images: list[np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write the int8 QDQ form of ``model`` to ``out`` (atomically).

    Post-training static quantization of the convolutions (QDQ, uint8 activations, int8
    per-channel weights, min/max calibration); the nodes in ``FLOAT_NODES`` stay float.

    Parameters
    ----------
    model : str or PathLike
        An sss-rt fp32 ONNX model.
    out : str or PathLike
        The int8 ONNX file to write; its calibration images are written beside it.
    images : list of ndarray, optional
        H×W×3 uint8 RGB calibration images (default: :func:`calibration_images`).

    Returns
    -------
    dict
        The record stored in the model's metadata (precision, source sha256, calibration
        images, float nodes, quantizer version), the output path and the backbone.

    Raises
    ------
    ModelError
        ``model`` is not an sss-rt inference-form model.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from sss_rt.model_info import INPUT_NAME, read_model_info

    model, out = Path(model), Path(out)
    info = read_model_info(model)  # a clear ModelError for a file that is not ours
    names = {n.name for n in onnx.load(str(model), load_external_data=False).graph.node}
    missing = [n for n in FLOAT_NODES if n not in names]
    if missing:
        raise ModelError(f"{model}: not an sss-rt inference-form graph (no {missing[0]})")
    images = images if images is not None else calibration_images()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(images)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self._it, None)
            return None if image is None else {INPUT_NAME: np.ascontiguousarray(image)[None]}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(q), Reader(),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["Conv"],
            nodes_to_exclude=list(FLOAT_NODES), calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
        quantized = onnx.load(str(q))
        record = {
            "precision": "int8",
            "source_sha256": sha256_file(model),
            "calibration_images": len(images),
            "float_nodes": list(FLOAT_NODES),
            "quantizer_version": QUANTIZER_VERSION,
        }
        entry = quantized.metadata_props.add()
        entry.key, entry.value = QUANTIZATION_KEY, json.dumps(record)
        onnx.save(quantized, str(q))
        np.savez_compressed(
            Path(tmp) / "calib.npz", **{f"image_{i}": im for i, im in enumerate(images)}
        )
        os.replace(q, out)
        os.replace(Path(tmp) / "calib.npz", calibration_path(out))
    return {**record, "model": str(out), "backbone": info.backbone}


def calibration_path(model: str | os.PathLike[str]) -> Path:
    """Where the calibration images of ``model``'s int8 form are kept."""
    return Path(str(model) + ".calibration.npz")


def quantized_model(model: str | os.PathLike[str]) -> Path:
    """The cached int8 form of ``model``, made on first use (seconds).

    Parameters
    ----------
    model : str or PathLike
        An sss-rt fp32 ONNX model.

    Returns
    -------
    Path
        The int8 model in the per-user cache (``$SSS_RT_CACHE`` or ``~/.cache/sss-rt``).
    """
    directory = cache_root() / "quantized"
    key = f"{sha256_file(model)[:16]}.v{QUANTIZER_VERSION}"
    path = directory / f"{key}.int8.onnx"

    def make() -> None:
        logging.getLogger("sss_rt").info("quantizing %s to int8 (once): %s", model, path)
        quantize(model, path)

    make_once(directory / f"{key}.lock", path.is_file, make)
    return path
