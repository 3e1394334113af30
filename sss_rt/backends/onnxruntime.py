"""ONNX Runtime backend: the trunk in ONNX Runtime, the head per band in compiled code.

Split execution (the default) runs the graph's low-resolution trunk once per image and hands
the post-processing a :class:`~sss_rt.head.HeadSource`, whose full-resolution rows are computed
when asked. Whole-graph execution (``execution="whole"``, also used for parity) runs the
exported graph as it is, with the CPU, CUDA or TensorRT execution providers.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from sss_rt.backends.base import Backend, check_image, release_freed_memory
from sss_rt.backends.onnx_graph import load_feature_model
from sss_rt.backends.support import check_support
from sss_rt.bands import ArraySource, DeviceArraySource, FeatureSource
from sss_rt.device import Device
from sss_rt.errors import BackendUnavailableError, ModelError
from sss_rt.families import family_of
from sss_rt.families.trunk_tiles import keep_region, run_in_tiles, runs_tiled
from sss_rt.model_info import INPUT_NAME, OUTPUT_NAME, ModelInfo
from sss_rt.precision import DEFAULT_PRECISION, check_precision, head_variant

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


def gpu_providers() -> list[str]:
    """GPU execution providers this onnxruntime build offers, best first."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]


def _session_options(
    threads: int | None, graph_optimization: str, memory_patterns: bool = True
) -> Any:
    """The session options of every session this backend makes (the tiled trunk's with
    ONNX Runtime's memory patterns off)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    options.log_severity_level = 3
    # the arena keeps freed full-resolution activations around: measured at 512×512, it
    # nearly doubles peak RSS (4.6 GB vs 2.5 GB) for no speed gain
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = memory_patterns
    return options


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        model: str | os.PathLike[str],
        device: str | Device = "auto",
        threads: int | None = None,
        graph_optimization: str = "all",
        execution: str = "split",
        precision: str = DEFAULT_PRECISION,
    ):
        self.precision = check_precision(precision)
        dev = check_support(self.name, device, precision, execution)
        if graph_optimization not in GRAPH_OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {GRAPH_OPT_LEVELS}")
        graph, path, props = load_feature_model(os.fspath(model), precision)
        options = _session_options(threads, graph_optimization)
        providers: list[Any] = ["CPUExecutionProvider"]
        gpus = gpu_providers() if precision == "fp32" else []
        if dev.is_cuda:
            if not gpus:
                raise BackendUnavailableError(
                    "device cuda needs onnxruntime-gpu in place of onnxruntime: pip uninstall -y "
                    "onnxruntime && pip install onnxruntime-gpu"
                )
            providers = [(p, {"device_id": dev.cuda_index}) for p in gpus] + providers
        elif dev.kind == "auto" and gpus:
            providers = gpus + providers
        self._info = ModelInfo.from_metadata(props)
        self._path, self._options, self._providers_asked = path, options, providers
        self._graph_optimization = graph_optimization
        self.threads = threads
        self._whole: Any = None
        self._trunk: Any = None
        self._source: Any = None
        # int8: the head in bf16 where the CPU has AMX (fp32 elsewhere)
        self._head = head_variant("int8") if self.precision == "int8" else None
        # the split runs the head on the host: it is the CPU execution's way
        split = None
        if execution == "split" and providers == ["CPUExecutionProvider"]:
            split = family_of(props).split(graph, path)
        self._tiling = family_of(props).tiling
        self._lock = threading.Lock()
        self._large_trunk: Any = None
        self._trunk_model = split.trunk if split is not None else None
        if split is not None:
            self._trunk, self._source = self._session(split.trunk), split.source
            active = self._trunk
        else:
            active = self._whole_session()
        self._providers = active.get_providers()
        on_cpu = self._providers[0] == "CPUExecutionProvider"
        self._device = "cpu" if on_cpu else str(Device("cuda", dev.cuda_index))

    def _session(self, model: str | bytes, options: Any = None) -> Any:
        import onnxruntime as ort

        options = options or self._options
        try:
            return ort.InferenceSession(model, options, providers=self._providers_asked)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"cannot load ONNX model {self._path}: {first}") from None

    def _whole_session(self) -> Any:
        if self._whole is None:
            self._whole = self._session(self._path)
        return self._whole

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    @property
    def splits(self) -> bool:
        return self._trunk is not None

    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        batch = check_image(image)[None]
        if Device.parse(self._device).is_cuda:
            return self._device_features(batch)
        if self._trunk is None or whole:
            return ArraySource(self._whole_session().run(None, {INPUT_NAME: batch})[0][0])
        large = runs_tiled(image.shape[0], image.shape[1], self._tiling)
        session = self._tiled_trunk() if large else self._trunk

        def trunk(tile: np.ndarray, keep: tuple[int, int, int, int]) -> list[np.ndarray]:
            outs = session.run(None, {INPUT_NAME: tile[None]})
            release_freed_memory()  # the trunk's freed activations, back to the system
            return [keep_region(out[0], tile.shape[:2], keep) for out in outs]

        # a large image's trunk in tiles (sss_rt.families.trunk_tiles: bounded memory)
        outs = (
            run_in_tiles(trunk, batch[0])
            if large
            else trunk(batch[0], (0, image.shape[0], 0, image.shape[1]))
        )
        return self._source(outs, self.threads, self._head)

    def _tiled_trunk(self) -> Any:
        """The trunk for tiles of large images: ONNX Runtime's memory patterns off (with them
        on, a part's peak hardly shrank: 4 bands of rows 4217 MB at 24 MP; off, 3617 MB; on images
        that run whole they are 7% faster, so the whole-image session keeps them)."""
        with self._lock:
            if self._large_trunk is None:
                options = _session_options(
                    self.threads, self._graph_optimization, memory_patterns=False
                )
                self._large_trunk = self._session(self._trunk_model, options)
            return self._large_trunk

    def _device_features(self, batch: np.ndarray) -> FeatureSource:
        """The whole graph on a GPU execution provider, its output bound in GPU memory (I/O
        binding): a device source for the CUDA post-processing, or a host array where no CUDA
        runtime (pycuda, CuPy) is usable. ``run_with_iobinding`` returns once the output is
        written."""
        session = self._whole_session()
        binding = session.io_binding()
        binding.bind_cpu_input(INPUT_NAME, batch)
        binding.bind_output(OUTPUT_NAME, "cuda", Device.parse(self._device).cuda_index)
        session.run_with_iobinding(binding)
        out = binding.get_outputs()[0]
        try:
            from sss_rt.cuda import cuda_runtime

            runtime = cuda_runtime(Device.parse(self._device).cuda_index)
        except BackendUnavailableError:
            return ArraySource(out.numpy()[0])
        shape = tuple(out.shape())[1:]
        return DeviceArraySource(out.data_ptr(), shape, np.float32, runtime, owner=(out, binding))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "providers": self.providers, "precision": self.precision}

    def close(self) -> None:
        self._whole = None
        self._trunk = None
