"""Numeric precision of the network on the CPU, and the CPU's matrix and vector units.

``fp32`` is the reference; ``int8`` runs the network's convolutions on ONNX Runtime's int8
kernels (AVX-512 VNNI / AMX-INT8 where the CPU has them) from a model quantized with
:mod:`sss_rt.export.quantize` (made and cached on first use). ``cpu_flags()`` reads
``/proc/cpuinfo``; ``SSS_RT_CPU_FLAGS`` (space-separated) replaces it, to simulate another CPU.
"""

from __future__ import annotations

import os
from functools import cache

PRECISIONS = ("fp32", "int8")
#: the flags that matter for the network's speed, in the order reported
UNITS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@cache
def _proc_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> frozenset[str]:
    override = os.environ.get("SSS_RT_CPU_FLAGS")
    return frozenset(override.split()) if override is not None else _proc_flags()


def cpu_units() -> dict[str, bool]:
    """Which of the units in UNITS this CPU has."""
    flags = cpu_flags()
    return {unit: unit in flags for unit in UNITS}


def int8_unit() -> str:
    """What runs int8 here: AMX, VNNI, or plain AVX2/AVX-512 (no int8 dot-product unit)."""
    flags = cpu_flags()
    if "amx_int8" in flags:
        return "AMX-INT8"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "AVX-512 VNNI" if "avx512_vnni" in flags else "AVX-VNNI"
    return "no int8 dot-product unit (int8 may be slower than fp32)"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision
