"""Numeric precision of the network on the CPU, and the CPU's matrix and vector units.

``fp32`` is the reference. ``bf16`` runs the trunk on OpenVINO in bf16 (AMX-BF16 or
AVX512-BF16) and the full-resolution head in the compiled bf16 kernel (``kernels/
cpu_head_bf16.h``) where the CPU has AMX (the fp32 head elsewhere: ``AUTO_HEAD_VARIANTS``);
``int8`` runs the trunk's convolutions in int8 (AMX-INT8 / AVX-512 VNNI) from a model quantized
with :mod:`sss_rt.export.quantize` (made and cached on first use), with the AMX bf16 head, or
where there is no AMX the int8 head (the hidden layer quantized to uint8 per pixel, VPDPBUSD).
``auto`` is bf16 where the CPU has AMX-BF16 or AVX512-BF16, else fp32. ``cpu_flags()`` reads
``/proc/cpuinfo``;
``SSS_RT_CPU_FLAGS`` (space-separated) replaces it, to simulate another CPU.
"""

from __future__ import annotations

import os
from functools import cache

#: what the network runs in (which backend runs which, on which device:
#: :data:`sss_rt.backends.support.SUPPORT`; ``tf32`` is the torch backend's on a GPU)
PRECISIONS = ("fp32", "bf16", "int8", "tf32")
#: what ``--precision`` accepts: a precision, or ``auto`` (:func:`resolve_precision`)
PRECISION_CHOICES = ("auto", *PRECISIONS)
#: every backend's, the Extractor's and the CLI's default: bit-reproducible on every CPU
#: (``auto`` is one flag away: ~3× faster where the CPU has a bf16 unit, ~2e-4 mean error)
DEFAULT_PRECISION = "fp32"
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


def bf16_unit() -> str | None:
    """What runs bf16 here: ``"AMX-BF16"``, ``"AVX512-BF16"``, or None."""
    flags = cpu_flags()
    if "amx_bf16" in flags and "amx_tile" in flags:
        return "AMX-BF16"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


#: the fused head kernels each precision picks from without being asked, fastest first where
#: the CPU runs them (at 1 MP on a 2-core AMX Xeon: amx-bf16 0.42 s, avx512-vnni-int8 0.55 s,
#: avx512-bf16 1.16 s, the fp32 head 1.64 s). bf16 takes AMX only: the AVX512-BF16 kernel is
#: no faster than the fp32 head (one VDPBF16PS per cycle does the MACs of two fp32 FMAs; the
#: same on AMD's EPYC); int8 also takes the VNNI kernel (the hidden layer in uint8), and only
#: int8 does. ``SSS_RT_HEAD_VARIANT`` names one a precision allows, to run it anyway.
AUTO_HEAD_VARIANTS = {"bf16": ("amx-bf16",), "int8": ("amx-bf16", "avx512-vnni-int8")}
_HEAD_UNITS = {
    "amx-bf16": {"amx_bf16", "amx_tile"},
    "avx512-bf16": {"avx512_bf16"},
    "avx512-vnni-int8": {"avx512_vnni", "avx512bw"},
}
_HEAD_ALLOWED = {"bf16": ("amx-bf16", "avx512-bf16"), "int8": tuple(_HEAD_UNITS)}


def head_variant(precision: str = "bf16") -> str | None:
    """The compiled head kernel for ``precision`` (bf16 or int8): the first of
    ``AUTO_HEAD_VARIANTS[precision]`` (or ``$SSS_RT_HEAD_VARIANT``, if that precision allows it)
    that this CPU — as ``cpu_flags`` reports it, so simulated flags count — and the build both
    run; None: the fp32 head."""
    from sss_rt import native

    if precision not in AUTO_HEAD_VARIANTS:
        return None
    wanted = os.environ.get("SSS_RT_HEAD_VARIANT")
    order = (wanted,) if wanted in _HEAD_ALLOWED[precision] else AUTO_HEAD_VARIANTS[precision]
    flags, built = cpu_flags(), native.head_variants()
    for variant in order:
        if variant in built and _HEAD_UNITS[variant] <= flags:
            return variant
    return None


def resolve_precision(precision: str) -> str:
    """``auto`` → ``bf16`` where the CPU has AMX-BF16 or AVX512-BF16, else ``fp32``; any other
    precision is checked and returned."""
    if precision == "auto":
        return "bf16" if bf16_unit() is not None else "fp32"
    return check_precision(precision)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}"
        )
    return precision
