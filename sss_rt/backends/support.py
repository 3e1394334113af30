"""What each backend supports, in one table: precision × device × execution.

:func:`~sss_rt.backends.create_backend`, every backend's constructor (through
:func:`check_support`), the error messages and ``sss-rt info`` read :data:`SUPPORT`; no backend
re-checks a precision or a device with its own message.
"""

from __future__ import annotations

from dataclasses import dataclass

from sss_rt.device import Device
from sss_rt.errors import BackendUnavailableError


@dataclass(frozen=True)
class Support:
    """A backend's packages, and per device kind (``cpu``, ``cuda``) the precisions it runs.

    ``executions``: ``split`` (trunk + head per band) and/or ``whole`` (the graph as one).
    """

    packages: tuple[str, ...]
    precisions: dict[str, tuple[str, ...]]
    executions: tuple[str, ...] = ("split", "whole")
    note: str = ""

    @property
    def devices(self) -> tuple[str, ...]:
        """The device kinds it runs on."""
        return tuple(self.precisions)


#: backend name → what it supports (the one list of backends)
SUPPORT: dict[str, Support] = {
    "onnxruntime": Support(
        ("onnxruntime",),
        {"cpu": ("fp32", "int8"), "cuda": ("fp32",)},
        note="cuda needs onnxruntime-gpu in place of onnxruntime; split execution on the CPU",
    ),
    "openvino": Support(("openvino",), {"cpu": ("fp32", "bf16", "int8")}),
    "torch": Support(
        ("torch",),
        {"cpu": ("fp32",), "cuda": ("fp32", "tf32")},
        note="fp32 on cuda turns TF32 off (exact fp32); tf32 lets cuDNN use it for speed",
    ),
    "tensorrt": Support(
        ("tensorrt",),
        {"cuda": ("fp32",)},
        executions=("whole",),
        note="an engine's precision is set when it is built (sss-rt build-engine --precision); "
        "needs a CUDA runtime (CuPy or pycuda)",
    ),
}


def where(precision: str, kind: str | None = None) -> list[str]:
    """``backend (devices)`` for every backend that runs ``precision`` (on ``kind``)."""
    out = []
    for name, s in SUPPORT.items():
        kinds = [k for k, ps in s.precisions.items() if precision in ps and kind in (None, k)]
        if kinds:
            out.append(f"{name} ({', '.join(kinds)})")
    return out


def check_support(
    backend: str, device: str | Device, precision: str, execution: str | None = None
) -> Device:
    """Check that ``backend`` runs ``precision`` on ``device`` (and ``execution``).

    Returns the parsed device; ``auto`` devices pass on the kinds the backend has.

    Raises
    ------
    BackendUnavailableError
        One line saying where the precision (or device, or execution) runs instead.
    ValueError
        An unknown backend or execution name.
    """
    dev = Device.parse(device)
    if backend not in SUPPORT:
        raise ValueError(f"unknown backend {backend!r}; choose from auto, {', '.join(SUPPORT)}")
    s = SUPPORT[backend]
    if execution is not None and execution not in ("split", "whole"):
        raise ValueError(f"execution must be one of split, whole, got {execution!r}")
    kinds = s.devices if dev.kind == "auto" else (dev.kind,)
    if not any(k in s.precisions for k in kinds):
        there = [n for n, t in SUPPORT.items() if dev.kind in t.devices]
        raise BackendUnavailableError(
            f"the {backend} backend runs on {' and '.join(s.devices)}, not {dev}; "
            f"on {dev.kind} use: {', '.join(there)}"
        )
    offered = sorted({p for k in kinds for p in s.precisions.get(k, ())})
    if precision not in offered:
        others = where(precision, None if dev.kind == "auto" else dev.kind)
        instead = f"; {precision} runs on: {', '.join(others)}" if others else ""
        raise BackendUnavailableError(
            f"the {backend} backend runs {', '.join(offered)} on {dev}, not {precision}{instead}"
        )
    if execution is not None and execution not in s.executions:
        raise BackendUnavailableError(
            f"the {backend} backend runs {' and '.join(s.executions)} execution, not {execution}"
        )
    return dev


def describe() -> dict[str, str]:
    """Per backend, one line: devices and precisions (for ``sss-rt info``)."""
    return {
        name: "; ".join(f"{k}: {', '.join(ps)}" for k, ps in s.precisions.items())
        + f" — {'/'.join(s.executions)}"
        + (f" ({s.note})" if s.note else "")
        for name, s in SUPPORT.items()
    }


__all__ = ["SUPPORT", "Support", "check_support", "describe", "where"]
