"""OpenVINO backend: the trunk on OpenVINO's CPU plugin (oneDNN: AMX and AVX-512 bf16/int8), the
head per band in the compiled kernels.

The engine for ``bf16`` and ``int8`` on the CPU, chosen by measurement (``benchmarks/
RESULTS-precision.md``, network at 1 MP on a Xeon with AMX, the same head: int8 here 0.64 s
against ONNX Runtime's int8 kernels 0.92 s on the same quantized graph; bf16 here 0.70 s,
against 2.93 s for ONNX Runtime's fp32 split path). ``bf16`` sets OpenVINO's inference
precision to bf16 and runs the head in the bf16 kernel, the input tap in fp32; ``int8`` runs
the quantized graph (its float layers in bf16 where the CPU has the units) with the same head;
``fp32`` (the default of every backend: bit-reproducible; ``auto`` is one flag away) runs
everything in fp32. Split execution as in the ONNX Runtime backend; ``whole``
runs the whole graph in OpenVINO (the peer the split path is measured against).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sss_rt.backends.base import Backend, check_image
from sss_rt.backends.onnx_graph import load_feature_model
from sss_rt.backends.support import check_support
from sss_rt.bands import ArraySource, FeatureSource
from sss_rt.device import Device
from sss_rt.errors import BackendUnavailableError, ModelError
from sss_rt.families import family_of
from sss_rt.families.graph import cut
from sss_rt.families.trunk_tiles import keep_region, run_in_tiles, runs_tiled
from sss_rt.model_info import ModelInfo
from sss_rt.precision import DEFAULT_PRECISION, bf16_unit, check_precision, head_variant

#: bounds on the CPU plugin's caches of per-shape executors (runtime cache, entries) and of
#: oneDNN primitives (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``, read once per process, so set only
#: where the user has not): at OpenVINO's defaults (5000, 1024) every new image size kept ~5 MB
#: (+769 MB over 240 sizes, growing), at these +122 MB, flat after the largest size so far,
#: with the same speed on a repeated size (``benchmarks/RESULTS-openvino-sizes.md``)
RUNTIME_CACHE_CAPACITY = 100
PRIMITIVE_CACHE_CAPACITY = 100

#: OpenVINO's inference precision for each of ours (int8 layers come from the quantized graph
#: itself; its float layers run in bf16 where the CPU has a bf16 unit)
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}


def import_openvino() -> Any:
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(PRIMITIVE_CACHE_CAPACITY))
    try:
        import openvino
    except ImportError:
        raise BackendUnavailableError(
            "the openvino backend (bf16 and int8 on the CPU) needs OpenVINO: pip install openvino"
        ) from None
    return openvino


#: pixels per tile of a large image's trunk (without halos) on OpenVINO: its trunk takes ~2×
#: ONNX Runtime's working memory per pixel, so its tiles are a third of trunk_tiles' default
#: (measured at 24 MP, fast mode: see benchmarks/RESULTS-large.md)
TILE_PIXELS = 2_000_000


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(
        self,
        model: str | os.PathLike[str],
        device: str | Device = "auto",
        threads: int | None = None,
        execution: str = "split",
        precision: str = DEFAULT_PRECISION,
        engine_head: bool | None = None,
    ):
        ov = import_openvino()
        self.precision = check_precision(precision)
        check_support(self.name, device, precision, execution)
        if precision == "bf16" and bf16_unit() is None:
            raise BackendUnavailableError(
                "bf16 needs a CPU with AMX-BF16 or AVX512-BF16 and this one has neither; "
                "use --precision auto or fp32"
            )
        graph, path, props = load_feature_model(os.fspath(model), precision)
        self._info = ModelInfo.from_metadata(props)
        self._device = "cpu"
        self._path = path
        self.threads = threads
        self._core = ov.Core()
        model_cache = _model_cache_dir()
        if model_cache is not None:  # compiled models kept across processes
            self._core.set_property({"CACHE_DIR": str(model_cache)})
        self._lock = threading.Lock()
        self._config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_CAPACITY,
            "INFERENCE_PRECISION_HINT": HINTS[precision] if bf16_unit() else "f32",
        }
        if threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._source: Any = None
        self._whole: Any = None
        self._trunk: Any = None
        self._input_tap: Any = None
        self._trunk_model: bytes | None = None
        self._tap_model: bytes | None = None
        self._tile: tuple[tuple[int, ...], Any, Any] | None = None  # (shape, trunk, input tap)
        split = family_of(props).split(graph, path) if execution == "split" else None
        self._tiling = family_of(props).tiling
        self._dense: Any = None
        if split is not None:
            trunk, self._source = split.trunk, split.source
            # a part of the head on OpenVINO too (``engine_head``; default: where it runs in
            # bf16 — in fp32 it measured slower than BLAS, 5.4 s vs 4.5 s at 640×480)
            bf16 = self._config["INFERENCE_PRECISION_HINT"] == "bf16"
            if split.dense_graph is not None and (bf16 if engine_head is None else engine_head):
                self._dense = _DenseRunner(self._compile(split.dense_graph))
            if self._config["INFERENCE_PRECISION_HINT"] == "bf16":
                # the input tap (a 3×3 conv of the image, 4 channels) in fp32: in bf16 it alone
                # raised the embedding's mean error from 0.0002 to 0.0025 (astronaut, 480×360)
                import onnx

                parts = onnx.load_from_string(trunk)
                names = [o.name for o in parts.graph.output]
                self._tap_model = cut(parts, names[:1]).SerializeToString()
                self._input_tap = self._compile(
                    self._tap_model, {"INFERENCE_PRECISION_HINT": "f32"}
                )
                trunk = cut(parts, names[1:]).SerializeToString()
            self._trunk = self._compile(trunk)
            self._trunk_model = trunk
        self._head = head_variant(precision)

    def _compile(
        self,
        model: str | bytes,
        config: dict[str, Any] | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> Any:
        try:
            if isinstance(model, bytes):
                read = self._core.read_model(model=model, weights=b"")
            else:
                read = self._core.read_model(model)
            if shape is not None:  # a static input shape: OpenVINO plans its memory for it
                read.reshape({read.inputs[0]: list(shape)})
            config = {**self._config, **(config or {})}
            return _RequestPool(self._core.compile_model(read, "CPU", config))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"OpenVINO cannot load {self._path}: {first}") from None

    @property
    def splits(self) -> bool:
        return self._trunk is not None

    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        batch = check_image(image)[None]
        if self._trunk is None or whole:
            with self._lock:  # compiled once, by the first caller
                if self._whole is None:
                    self._whole = self._compile(self._path)
            return ArraySource(self._whole.run(batch)[0][0])

        def trunk(tile: np.ndarray, keep: tuple[int, int, int, int]) -> list[np.ndarray]:
            main, tap = self._tile_models(tile.shape) if large else (self._trunk, self._input_tap)

            def kept(out: np.ndarray) -> np.ndarray:  # only the tile's own part copied out
                return keep_region(out[0], tile.shape[:2], keep)

            outs = main.run(tile[None], kept)
            if tap is not None:
                outs.insert(0, tap.run(tile[None], kept)[0])
            return outs

        # a large image's trunk in square tiles (sss_rt.families.trunk_tiles), every tile one
        # shape, compiled for it. At 24 MP: whole, the trunk peaked at 9.8 GB; in bands of rows
        # of 6 MP (10 MP with halos) on the dynamic model at 5.9 GB; in static bands of 2 MP
        # (5.8 MP with halos) at 4.1 GB; in tiles of 2 MP (3.7 MP with halos, 22% fewer pixels
        # computed than those bands) at ~3.4 GB (benchmarks/RESULTS-large.md)
        large = runs_tiled(image.shape[0], image.shape[1], self._tiling)
        if large:
            try:
                outs = run_in_tiles(trunk, batch[0], TILE_PIXELS)
            finally:
                # the tile models' working memory released before the post-processing (in
                # bands of rows at 24 MP: 1.4 GB; kept, it put the peak at 4.5 GB): recompiling
                # for the next large image costs seconds against minutes of work
                with self._lock:
                    self._tile = None
        else:
            outs = trunk(batch[0], (0, image.shape[0], 0, image.shape[1]))
        return self._source(outs, self.threads, self._head, self._dense)

    def _tile_models(self, shape: tuple[int, ...]) -> tuple[Any, Any]:
        """The trunk (and fp32 input tap) compiled for tiles of this H×W×3 shape, kept while
        an image's tiles (all one shape) run; a new shape's replace them."""
        key = (1, *shape)
        with self._lock:
            if self._tile is None or self._tile[0] != key:
                self._tile = None  # the previous shape's memory first
                assert self._trunk_model is not None
                trunk = self._compile(self._trunk_model, shape=key)
                tap = None
                if self._tap_model is not None:
                    tap = self._compile(
                        self._tap_model, {"INFERENCE_PRECISION_HINT": "f32"}, shape=key
                    )
                self._tile = (key, trunk, tap)
            return self._tile[1], self._tile[2]

    def describe(self) -> dict[str, Any]:
        head = self._head or "fp32"
        return {**super().describe(), "precision": self.precision, "head": head}

    def close(self) -> None:
        self._whole = None
        self._trunk = None
        self._input_tap = None
        self._dense = None
        self._tile = None


def _model_cache_dir() -> Path | None:
    """Where OpenVINO keeps compiled models between processes (``openvino`` in the per-user
    cache); None where it cannot be made or ``SSS_RT_OPENVINO_CACHE=0``."""
    if os.environ.get("SSS_RT_OPENVINO_CACHE", "1") == "0":
        return None
    from sss_rt.export.cache import cache_root

    folder = cache_root() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


class _RequestPool:
    """A compiled model's infer requests, one per concurrent caller: OpenVINO's requests are not
    reentrant (a second ``infer`` on a busy one fails), so each call takes an idle request — or
    makes one — and returns it. As many requests exist as calls ever ran at once."""

    def __init__(self, compiled: Any):
        self.compiled = compiled
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def run(
        self, batch: np.ndarray, view: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> list[np.ndarray]:
        """Every output of one inference on ``batch`` — or the part of it ``view`` (an output
        → a view of it) picks — copied out of the request's buffers."""
        with self._lock:
            request = self._idle.pop() if self._idle else self.compiled.create_infer_request()
        try:
            request.infer({0: batch})
            outs = (request.get_output_tensor(i).data for i in range(len(self.compiled.outputs)))
            return [np.array(out if view is None else view(out)) for out in outs]
        finally:
            with self._lock:
                self._idle.append(request)


class _DenseRunner:
    """Runs a split's ``dense_graph`` (1×C×1×N in and out): a C×N float32 array in, a new C'×N
    array out; concurrent calls each get their own request."""

    def __init__(self, pool: _RequestPool):
        self._pool = pool

    def __call__(self, x: np.ndarray) -> np.ndarray:
        c, n = x.shape
        out = self._pool.run(np.ascontiguousarray(x).reshape(1, c, 1, n))[0]
        return out.reshape(out.shape[1], n)
