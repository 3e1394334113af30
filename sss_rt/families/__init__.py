"""Network families: what kind of network an sss-rt model is, and what that allows.

Every sss-rt ONNX model names its family in its metadata (``sss_rt.family``; models made
before families existed are ``hypercolumn``). A family says how the graph is cut for split
execution (which trunk outputs, which host-side head reads them), how the torch backend
rebuilds it, and what it allows: tiling the backbone (only where a crop's activations equal
the whole image's), folded batch norm, precisions. Backends, export and ``compare`` ask the
family of the model they hold, never a class name.

=================  =====================================  ======================================
family             network                                allows
=================  =====================================  ======================================
``hypercolumn``    the seed's hypercolumn net (any         tiling and bands of the backbone,
                   ResNet, trained with ``sss-rt train``)  folded batch norm, fp32/bf16/int8
``authors``        the authors' released extractor         the head in bands; the backbone on the
                   (DeepLab ResNet-101, per-image batch    whole image (per-image statistics),
                   norm), ``sss-rt import-authors``        fp32/bf16
=================  =====================================  ======================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sss_rt.errors import ModelError
from sss_rt.families.split import Split

#: the metadata key naming a model's family
FAMILY_KEY = "sss_rt.family"


@dataclass(frozen=True)
class Family:
    """One kind of network, and what it allows."""

    name: str
    description: str
    #: whether the backbone may run in tiles or bands of the image (its activations do not
    #: depend on statistics of the whole image)
    tiling: bool
    #: whether the exported graph has batch norm folded into its convolutions
    folded_batch_norm: bool
    #: the precisions its split execution supports on the CPU
    precisions: tuple[str, ...]
    #: (loaded ONNX model, its path) → :class:`Split`, or None where this graph cannot be cut
    split: Callable[[Any, str], Split | None]
    #: (ONNX path) → (inference ``torch.nn.Module``, :class:`~sss_rt.model_info.ModelInfo`)
    torch_module: Callable[[str], tuple[Any, Any]]
    #: the largest image (megapixels) it runs on the CPU within its memory bound; larger ones
    #: follow ``--max-megapixels``'s rules (downscaled with a warning, or refused)
    max_megapixels: float | None = None
    max_megapixels_reason: str = ""
    #: the smallest image side the network runs on
    min_side: int = 1
    #: why, for the error message
    min_side_reason: str = ""

    def check_size(self, height: int, width: int, name: str = "") -> None:
        """An :class:`~sss_rt.errors.ImageError` when the image is too small for the network."""
        if min(height, width) < self.min_side:
            from sss_rt.errors import ImageError

            raise ImageError(
                f"{name}image is {width}×{height}: the {self.name} network needs at least "
                f"{self.min_side}×{self.min_side} pixels ({self.min_side_reason})"
            )

    def check_precision(self, precision: str) -> None:
        """A :class:`ModelError` naming the family when it does not run ``precision``."""
        if precision not in self.precisions:
            raise ModelError(
                f"the {self.name} family ({self.description}) runs "
                f"{', '.join(self.precisions)}, not {precision}"
            )


def _hypercolumn() -> Family:
    def split(model: Any, path: str) -> Split | None:
        from sss_rt.families.hypercolumn import can_split, split_model
        from sss_rt.head import HeadSource

        if not can_split(model):
            return None
        trunk, weights = split_model(model, path)

        def source(
            outs: Sequence[np.ndarray], threads: int | None, head: str | None, dense: Any = None
        ):  # the whole head runs on the host (its ``dense`` runner: none)
            t_in, t_p1, deep = outs
            return HeadSource(weights, t_in, t_p1, deep, threads, variant=head)

        return Split(trunk, source)

    def torch_module(path: str) -> tuple[Any, Any]:
        from sss_rt.families.hypercolumn import inference_net_from_onnx

        return inference_net_from_onnx(path)

    return Family(
        "hypercolumn",
        "the seed's hypercolumn network",
        tiling=True,
        folded_batch_norm=True,
        precisions=("fp32", "bf16", "int8"),
        split=split,
        torch_module=torch_module,
    )


def _authors() -> Family:
    def split(model: Any, path: str) -> Split | None:
        from sss_rt.families.authors import split_authors

        return split_authors(model, path)

    def torch_module(path: str) -> tuple[Any, Any]:
        from sss_rt.families.authors_torch import authors_net_from_onnx

        return authors_net_from_onnx(path)

    return Family(
        "authors",
        "the authors' DeepLab ResNet-101 extractor",
        tiling=False,
        folded_batch_norm=False,
        precisions=("fp32", "bf16"),
        split=split,
        torch_module=torch_module,
        # its backbone runs on the whole image (per-image statistics): memory grows with the
        # image, 7.2 GB peak at 12 MP measured (benchmarks/RESULTS-authors.md), ~9.6 GB at 16
        max_megapixels=16.0,
        max_megapixels_reason="its backbone runs on the whole image",
        min_side=51,
        min_side_reason="its input is reflect-padded by 50 pixels",
    )


FAMILIES: dict[str, Family] = {f.name: f for f in (_hypercolumn(), _authors())}


def family_named(name: str) -> Family:
    """The family of that name (a :class:`ModelError` for one this version does not know)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(
            f"unknown network family {name!r} (this sss-rt knows {', '.join(FAMILIES)}); "
            "a newer sss-rt may have made this model"
        ) from None


def family_of(props: dict[str, str]) -> Family:
    """The family an ONNX model's metadata names (``hypercolumn`` when it names none)."""
    return family_named(props.get(FAMILY_KEY, "hypercolumn"))


__all__ = ["FAMILIES", "FAMILY_KEY", "Family", "Split", "family_named", "family_of"]
