"""TensorRT engine building: profiles, settings, sidecars and the per-user engine cache.

Building is apart from running (``sss_rt.backends.tensorrt`` runs what is built here), as in
Polygraphy's loaders and runners. An engine is only valid for the TensorRT version and the GPU
it was built on. Every engine has a JSON sidecar (``X.engine.json``) recording what it was built
from and for; a sidecar that does not match the running GPU / TensorRT is reported as
"built for … running on …". TensorRT and the CUDA runtime (:mod:`sss_rt.cuda`) are imported
only when used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sss_rt.export.cache import make_once

from sss_rt.errors import BackendUnavailableError, ModelError
from sss_rt.model_info import INPUT_NAME, ModelInfo, read_model_info, sha256_file

SIDECAR_FORMAT = 1
PRECISIONS = ("auto", "fp16", "fp32")
#: sidecar fields an engine must match on the running machine to be deserialized
MATCH_FIELDS = ("tensorrt", "gpu_name", "compute_capability")


@dataclass(frozen=True)
class Profile:
    """Dynamic-shape profile of the ``image`` input: batch and height×width ranges."""

    min_hw: tuple[int, int] = (128, 128)
    opt_hw: tuple[int, int] = (768, 1024)
    max_hw: tuple[int, int] = (2048, 2048)
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1

    def __post_init__(self) -> None:
        for i in (0, 1):
            if not 1 <= self.min_hw[i] <= self.opt_hw[i] <= self.max_hw[i]:
                raise ValueError(f"profile needs 1 ≤ min ≤ opt ≤ max, got {self}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"profile needs 1 ≤ min ≤ opt ≤ max batch, got {self}")

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """NHWC (min, opt, max) shapes of the input."""
        return (
            (self.min_batch, *self.min_hw, 3),
            (self.opt_batch, *self.opt_hw, 3),
            (self.max_batch, *self.max_hw, 3),
        )

    def check(self, shape: tuple[int, ...]) -> None:
        """Raise a one-line ``ValueError`` if an NHWC input shape is outside the profile."""
        n, h, w = shape[:3]
        if not (
            self.min_batch <= n <= self.max_batch
            and self.min_hw[0] <= h <= self.max_hw[0]
            and self.min_hw[1] <= w <= self.max_hw[1]
        ):
            raise ValueError(
                f"input {n}×{h}×{w} is outside the engine's profile (batch "
                f"{self.min_batch}–{self.max_batch}, {self.min_hw[0]}×{self.min_hw[1]} to "
                f"{self.max_hw[0]}×{self.max_hw[1]}); build an engine with a larger profile"
            )


@dataclass(frozen=True)
class BuildSettings:
    profile: Profile = field(default_factory=Profile)
    precision: str = "auto"  # auto (fp16 where the builder has the flag, else fp32) | fp16 | fp32
    workspace_mb: int = 4096
    timing_cache: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        if self.workspace_mb < 1:
            raise ValueError("workspace_mb must be >= 1")


def sidecar(
    onnx_sha256: str,
    settings: BuildSettings,
    machine: dict[str, Any],
    version: str,
    model: ModelInfo | None = None,
) -> dict[str, Any]:
    """The JSON record stored beside an engine."""
    return {
        "format": SIDECAR_FORMAT,
        "onnx_sha256": onnx_sha256,
        "model": asdict(model) if model is not None else None,
        "profile": asdict(settings.profile),
        "precision": settings.precision,
        "workspace_mb": settings.workspace_mb,
        **{k: machine.get(k) for k in ("tensorrt", "gpu_name", "compute_capability")},
        "sm_count": machine.get("sm_count"),
        "gpu_memory_mb": machine.get("gpu_memory_mb"),
        "sss_rt": version,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def cache_key(onnx_sha256: str, settings: BuildSettings, machine: dict[str, Any]) -> str:
    """A stable name for the engine of this model, settings, GPU and TensorRT version."""
    parts = {
        "onnx": onnx_sha256,
        "profile": asdict(settings.profile),
        "precision": settings.precision,
        **{k: machine.get(k) for k in MATCH_FIELDS},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def mismatch(record: dict[str, Any], machine: dict[str, Any]) -> str | None:
    """A one-line "built for … running on …" if ``record`` does not fit ``machine``."""
    diffs = [k for k in MATCH_FIELDS if record.get(k) != machine.get(k)]
    if not diffs:
        return None

    def describe(d: dict[str, Any]) -> str:
        cc = d.get("compute_capability")
        return f"{d.get('gpu_name')} (sm_{cc}), TensorRT {d.get('tensorrt')}"

    return f"engine built for {describe(record)}, running on {describe(machine)}"


def cache_dir() -> Path:
    """Per-user engine cache (``$SSS_RT_CACHE`` or ``$XDG_CACHE_HOME/sss-rt/engines``)."""
    from sss_rt.export.cache import cache_root

    # engines sit in $SSS_RT_CACHE itself (as they always have), else in the cache's engines/
    return cache_root() if os.environ.get("SSS_RT_CACHE") else cache_root() / "engines"


# --- the parts that need TensorRT and a GPU ---------------------------------------------------


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or a one-line ``BackendUnavailableError`` saying what to install."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed: it needs an NVIDIA GPU and pip install 'sss-rt[gpu]'"
        ) from None
    return trt


def running_machine(device: str = "cuda") -> dict[str, Any]:
    """TensorRT version and ``device``'s name, compute capability, SMs and memory."""
    from sss_rt.cuda import cuda_runtime
    from sss_rt.device import Device

    trt = require_tensorrt()
    runtime = cuda_runtime(Device.parse(device).cuda_index)
    return {"tensorrt": trt.__version__, **runtime.properties()}


def build(
    onnx_path: str | os.PathLike[str],
    engine_path: str | os.PathLike[str],
    settings: BuildSettings,
    log: Any = print,
    device: str = "cuda",
) -> dict[str, Any]:
    """Build an engine for ``device`` and its sidecar (written atomically); returns the
    sidecar."""
    from sss_rt.cuda import cuda_runtime
    from sss_rt.device import Device

    require_tensorrt()
    read_model_info(onnx_path)  # a clear ModelError for a file that is not ours
    with cuda_runtime(Device.parse(device).cuda_index).activate():  # TensorRT builds there
        return _build(Path(onnx_path), Path(engine_path), settings, log, device)


def _build(
    onnx_path: Path, engine_path: Path, settings: BuildSettings, log: Any, device: str
) -> dict[str, Any]:
    from sss_rt._version import __version__

    trt = require_tensorrt()
    info = read_model_info(onnx_path)
    machine = running_machine(device)
    logger = trt.Logger(trt.Logger.INFO)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"{onnx_path}: TensorRT cannot parse it: " + " | ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mb << 20)
    if settings.precision == "auto":  # TensorRT 11 has no FP16 flag (strongly typed networks)
        settings = replace(
            settings, precision="fp16" if hasattr(trt.BuilderFlag, "FP16") else "fp32"
        )
    if settings.precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise BackendUnavailableError(
                "this TensorRT has no FP16 builder flag (TensorRT 11 builds strongly typed "
                "networks): build with --precision fp32, or from an fp16 ONNX model"
            )
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *settings.profile.shapes())
    config.add_optimization_profile(profile)
    cache_file = Path(settings.timing_cache) if settings.timing_cache else None
    if cache_file is not None:
        blob = cache_file.read_bytes() if cache_file.is_file() else b""
        if not config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False):
            raise ModelError(
                f"{cache_file}: TensorRT refused this timing cache (another GPU or version?); "
                "delete it or pass another --timing-cache"
            )
    log(f"building {settings.precision} engine for {machine['gpu_name']} (this takes minutes)")
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"{onnx_path}: TensorRT could not build an engine (see its log above)")
    record = sidecar(sha256_file(onnx_path), settings, machine, __version__, info)
    record["build_seconds"] = round(time.perf_counter() - t0, 1)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(engine_path, bytes(serialized))
    _atomic_write(sidecar_path(engine_path), json.dumps(record, indent=2).encode())
    if cache_file is not None:
        _atomic_write(cache_file, bytes(config.get_timing_cache().serialize()))
    return record


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    return Path(str(engine_path) + ".json")


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def cached_engine(
    onnx: Path, settings: BuildSettings, machine: dict[str, Any], device: str = "cuda"
) -> Path:
    """The cache's engine for this model, settings, GPU (``device``, described by ``machine``)
    and TensorRT, built if missing.

    An engine without its sidecar (a build killed between the two writes) is rebuilt, never
    refused. Builds of one key are serialized by a lock file (``KEY.lock``, ``flock``): a second
    process waits for the first and then uses its engine instead of building it again.
    """
    key = cache_key(sha256_file(onnx), settings, machine)
    directory = cache_dir()
    engine_path = directory / f"{key}.engine"
    make_once(
        directory / f"{key}.lock",
        lambda: engine_path.is_file() and sidecar_path(engine_path).is_file(),
        lambda: build(onnx, engine_path, settings, device=device),
    )
    return engine_path
