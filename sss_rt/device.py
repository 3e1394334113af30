"""Where work runs: a device named once (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and parsed once.

The Extractor, :func:`~sss_rt.backends.create_backend`, the backends and the post-processing
take a :class:`Device` (or its name, parsed here) and ask it, never the string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_SPEC = re.compile(r"(auto|cpu|cuda)(?::(\d+))?")


@dataclass(frozen=True)
class Device:
    """A device: its ``kind`` and, for a GPU, ``index``.

    ``kind``: ``"auto"`` (a GPU where the backend has one, else the CPU), ``"cpu"`` or
    ``"cuda"``; ``index``: the GPU's ordinal (``None``: the default GPU, 0).
    """

    kind: Literal["auto", "cpu", "cuda"]
    index: int | None = None

    @classmethod
    def parse(cls, spec: str | Device) -> Device:
        """Parse ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` (or a Device) into a Device.

        Raises
        ------
        ValueError
            Anything else, naming the accepted forms.
        """
        if isinstance(spec, Device):
            return spec
        text = str(spec).strip().lower()
        m = _SPEC.fullmatch(text)
        if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
            raise ValueError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
        index = int(m.group(2)) if m.group(2) is not None else None
        return cls(m.group(1), index)  # type: ignore[arg-type]

    @property
    def is_cuda(self) -> bool:
        """Whether it names a CUDA GPU."""
        return self.kind == "cuda"

    @property
    def is_cpu(self) -> bool:
        """Whether it names the CPU."""
        return self.kind == "cpu"

    @property
    def cuda_index(self) -> int:
        """The GPU ordinal (0 for ``cuda`` and ``auto``)."""
        return self.index or 0

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


CPU = Device("cpu")

__all__ = ["CPU", "Device"]
