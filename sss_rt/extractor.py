"""The Python API: ``Extractor`` turns RGB images into semantic feature descriptors."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sss_rt import blas
from sss_rt.backends import Backend, create_backend
from sss_rt.backends.base import check_image
from sss_rt.bundled import DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME  # re-exported
from sss_rt.bundled import default_model_path
from sss_rt.bundled import examples_dir as examples_dir  # re-exported
from sss_rt.device import Device
from sss_rt.errors import ImageError
from sss_rt.families import family_named
from sss_rt.model_info import ModelInfo
from sss_rt.postprocess import Postprocessor
from sss_rt.postprocess.config import PostprocessConfig
from sss_rt.postprocess.pca import PCABasis
from sss_rt.precision import DEFAULT_PRECISION
from sss_rt.timing import timed

ImageLike = str | os.PathLike[str] | np.ndarray

#: images above this many megapixels are downscaled (or refused) by default
DEFAULT_MAX_MEGAPIXELS = 64.0
#: above this size, images run split (the trunk once, the head per band: bounded memory) where
#: the backend splits; 0: all, since it was faster and lighter than the whole graph at every
#: size measured
DEFAULT_TILE_MEGAPIXELS = 0.0
#: the limit for whole-graph execution on the CPU (``--no-tiling``, or a backend that cannot
#: split): the whole graph's full-resolution layers take ~10 GB of memory per megapixel
WHOLE_GRAPH_MAX_MEGAPIXELS = 2.0
LARGE_POLICIES = ("downscale", "refuse")

log = logging.getLogger("sss_rt")


@dataclass
class ExtractionResult:
    """Features of one image (:meth:`Extractor.extract`).

    Attributes
    ----------
    embedding : ndarray
        H×W×3 float32 in [0, 1]: the semantic feature descriptors, at the input's size.
    image : ndarray
        H×W×3 uint8 RGB input.
    features : ndarray or None
        H×W×C float32 raw network features (at the processed size), when asked.
    basis : PCABasis or None
        The per-image PCA basis.
    source : Path or None
        The file the image came from.
    scale : float
        Factor the image was shrunk by before the network (1.0: full resolution).
    """

    embedding: np.ndarray  #: H×W×3 float32 in [0, 1]: the semantic feature descriptors
    image: np.ndarray  #: H×W×3 uint8 RGB input
    features: np.ndarray | None = None  #: H×W×128 float32 raw network features, when asked
    basis: PCABasis | None = None  #: the per-image PCA basis
    source: Path | None = None  #: the file the image came from, if any
    #: factor the image was shrunk by before the network (1.0: full resolution); the embedding
    #: is always at the input's resolution, ``features`` at the processed one
    scale: float = 1.0


class Extractor:
    """Semantic feature extraction: network → guided filter → PCA → [0, 1].

    Every image flows the same way: the backend turns it into a source of feature bands
    (:mod:`sss_rt.bands`), the post-processing mode reads them in bounded memory. One Extractor
    may be shared by threads (each call gives its serial result, up to float rounding).

    Parameters
    ----------
    model : str or PathLike, optional
        An exported ONNX file (``sss-rt export``, ``sss-rt import-authors``) or a training
        checkpoint (``.pt``, torch backend). Default: the bundled model.
    backend : {"auto", "onnxruntime", "openvino", "torch", "tensorrt"}
        ``"auto"``: torch for ``.pt``, OpenVINO for bf16/int8 on the CPU, else ONNX Runtime.
        What each runs: :data:`sss_rt.backends.support.SUPPORT`.
    device : str or Device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. On a CUDA device the exact mode
        post-processes on the GPU where a CUDA runtime (CuPy, pycuda) works.
    radius, eps : int, float, optional
        The guided filter's window radius and regularization (default 5 and 0.01; see
        :class:`PostprocessConfig`).
    postprocess : {"exact", "fast", "matlab"} or PostprocessConfig, optional
        The post-processing mode (default ``"exact"``), or all post-processing settings at once
        (:class:`PostprocessConfig`; ``radius`` and ``eps`` override its values).
    threads : int, optional
        CPU threads of the network and the post-processing (default: all cores).
    max_megapixels : float or None
        Larger images are downscaled to fit before the network (the embedding is resized back
        to the input's size, with a warning) or, with ``large="refuse"``, rejected; ``None``
        lifts the limit. Default 64.
    large : {"downscale", "refuse"}
    tile_megapixels : float or None
        Images above it (default: all) run split where the backend splits — the trunk once,
        the full-resolution head per band — with the whole graph's result up to float
        rounding; ``None`` runs the whole graph (at most ``WHOLE_GRAPH_MAX_MEGAPIXELS`` on the
        CPU).
    precision : {"fp32", "bf16", "int8", "tf32", "auto"}
        ``"fp32"`` (default, bit-reproducible), ``"bf16"`` (AMX-BF16 / AVX512-BF16), ``"int8"``
        (AMX-INT8 / VNNI, from a quantized model made and cached on first use), ``"tf32"``
        (torch on a GPU) or ``"auto"`` (bf16 where the CPU has a bf16 unit, else fp32).
    backend_options : dict, optional
        Passed to the backend's constructor: ``execution`` (``"split"`` or ``"whole"``; ONNX
        Runtime, OpenVINO, torch); for TensorRT ``settings`` (the
        :class:`~sss_rt.export.engine.BuildSettings` an ONNX model is built with on first use)
        and ``strict`` (refuse an engine built for another GPU or TensorRT instead of
        rebuilding it); for OpenVINO ``engine_head``.
    preprocess : {"exact", "fast", "matlab"}, optional
        Deprecated spelling of ``postprocess`` (a mode name).

    Raises
    ------
    ModelError
        The model is missing or not an sss-rt model.
    BackendUnavailableError
        The backend, precision or device cannot run here (the message says what can).
    ValueError
        A bad option value.

    Examples
    --------
    >>> import numpy as np
    >>> from sss_rt import Extractor
    >>> image = np.zeros((48, 64, 3), np.uint8)
    >>> with Extractor(device="cpu") as ex:
    ...     result = ex.extract(image)
    >>> result.embedding.shape, result.embedding.dtype.name
    ((48, 64, 3), 'float32')
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        backend: str = "auto",
        device: str | Device = "auto",
        *,
        radius: int | None = None,
        eps: float | None = None,
        postprocess: str | PostprocessConfig | None = None,
        threads: int | None = None,
        max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS,
        large: str = "downscale",
        tile_megapixels: float | None = DEFAULT_TILE_MEGAPIXELS,
        precision: str = DEFAULT_PRECISION,
        backend_options: dict[str, Any] | None = None,
        preprocess: str | None = None,
    ) -> None:
        if preprocess is not None:
            warnings.warn(
                "Extractor(preprocess=...) is deprecated: the post-processing mode is postprocess=",
                DeprecationWarning,
                stacklevel=2,
            )
            if postprocess is not None:
                raise TypeError("give postprocess= only (preprocess= is its deprecated spelling)")
            postprocess = preprocess
        if large not in LARGE_POLICIES:
            raise ValueError(f"large must be one of {LARGE_POLICIES}, got {large!r}")
        if max_megapixels is not None and not max_megapixels > 0:
            raise ValueError("max_megapixels must be > 0")
        self.max_megapixels = max_megapixels
        self.large = large
        self.tile_megapixels = tile_megapixels
        self.threads = threads
        if isinstance(postprocess, str):
            config = PostprocessConfig(mode=postprocess)
        else:
            config = postprocess or PostprocessConfig()
        given = {"radius": radius, "eps": eps, "threads": threads}
        overrides = {k: v for k, v in given.items() if v is not None}
        if overrides:
            config = PostprocessConfig(**{**config.__dict__, **overrides})
        self.config = config
        self.model_path = Path(model) if model is not None else default_model_path()
        device = Device.parse(device)  # parsed once, handed down
        self._backend: Backend | None = create_backend(
            backend,
            self.model_path,
            device=device,
            threads=threads,
            precision=precision,
            **(backend_options or {}),
        )
        #: where the post-processing runs: the CUDA kernels next to a GPU backend, else the CPU
        self.postprocessor = Postprocessor(config, self._backend.device)

    @property
    def backend(self) -> Backend:
        """The backend running the network (``RuntimeError`` once closed)."""
        if self._backend is None:
            raise RuntimeError("this Extractor is closed")
        return self._backend

    @property
    def info(self) -> ModelInfo:
        """The model's metadata (family, backbone, input mean and channel order)."""
        return self.backend.info

    def features(self, image: np.ndarray) -> np.ndarray:
        """Raw network features of one image, computed as :meth:`extract` computes them.

        Parameters
        ----------
        image : ndarray
            H×W×3 uint8 RGB.

        Returns
        -------
        ndarray
            C×H×W float32 (C = 128 for the bundled model).
        """
        image = check_image(image)
        family_named(self.info.family).check_size(image.shape[0], image.shape[1])
        with blas.one_thread():  # results independent of BLAS's thread count (sss_rt.blas)
            bands = self.backend.features(image, whole=not self._splits(image))
            return bands.rows(0, image.shape[0])

    def extract(
        self,
        image: ImageLike,
        *,
        return_features: bool = False,
        timings: dict[str, float] | None = None,
    ) -> ExtractionResult:
        """Semantic features of one image.

        Parameters
        ----------
        image : ndarray or str or PathLike
            H×W×3 uint8 RGB, or an image file (read with its EXIF orientation).
        return_features : bool
            Also return the raw network features (H×W×C float32, at the processed size).
        timings : dict, optional
            Receives seconds per stage: decode, network (the trunk, and the head's bands as the
            post-processing reads them), guided_filter, pca, normalize.

        Returns
        -------
        ExtractionResult
            ``embedding``: H×W×3 float32 in [0, 1] at the input's size.

        Raises
        ------
        ImageError
            An unreadable, truncated or too large file, or an image smaller than the model
            allows.
        """
        source = None
        if not isinstance(image, np.ndarray):
            source = Path(image)
            with timed(timings, "decode"):
                from sss_rt.io.images import load_image

                image = load_image(source, self.max_megapixels, self.large)
        image = check_image(image)
        work, scale = self._fit(image, source)
        height, width = work.shape[:2]
        family_named(self.info.family).check_size(height, width, f"{source}: " if source else "")
        with blas.one_thread():  # results independent of BLAS's thread count (sss_rt.blas)
            with timed(timings, "network"):
                bands = self.backend.features(work, whole=not self._splits(work))
            result = self.postprocessor(bands, work, keep_features=return_features, timings=timings)
        embedding = result.embedding
        if scale != 1.0:
            h, w = image.shape[:2]
            import cv2

            embedding = cv2.resize(embedding, (w, h), interpolation=cv2.INTER_LINEAR)
            embedding = np.clip(embedding.reshape(h, w, -1), 0.0, 1.0)
        raw = result.features
        return ExtractionResult(
            embedding=embedding,
            image=image,
            features=np.moveaxis(raw, 0, -1) if raw is not None else None,
            basis=result.basis,
            source=source,
            scale=scale,
        )

    def can_tile(self) -> bool:
        """Whether large images run split (bounded memory) with this backend and settings."""
        return self.tile_megapixels is not None and self.backend.splits

    def _splits(self, image: np.ndarray) -> bool:
        mp = image.shape[0] * image.shape[1] / 1e6
        return self.can_tile() and mp > self.tile_megapixels  # type: ignore[operator]

    def _limit(self) -> tuple[float | None, str]:
        """The size limit for this backend and settings, and why (empty: the user's own)."""
        if self.max_megapixels is None:
            return None, ""
        limits = [(self.max_megapixels, "")]
        if self.backend.device == "cpu" and not self.can_tile():
            why = (
                " for whole-graph execution on the CPU (split execution has no such limit;"
                " it is off with --no-tiling)"
            )
            limits.append((WHOLE_GRAPH_MAX_MEGAPIXELS, why))
        family = family_named(self.info.family)
        if self.backend.device == "cpu" and family.max_megapixels is not None:
            why = f" of the {family.name} network on the CPU ({family.max_megapixels_reason})"
            limits.append((family.max_megapixels, why))
        return min(limits, key=lambda item: item[0])

    def _fit(self, image: np.ndarray, source: Path | None) -> tuple[np.ndarray, float]:
        """The image to run (downscaled if above the size limit) and its scale factor."""
        h, w = image.shape[:2]
        mp = h * w / 1e6
        limit, why = self._limit()
        if limit is None or mp <= limit:
            return image, 1.0
        name = f"{source}: " if source else ""
        if self.large == "refuse":
            raise ImageError(
                f"{name}image is {w}×{h} ({mp:.1f} MP), above the {limit:g} MP limit{why} "
                "(raise it with --max-megapixels, or --large downscale)"
            )
        scale = (limit / mp) ** 0.5
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        log.warning(
            "%simage is %d×%d (%.1f MP), above the %g MP limit%s: processed at %d×%d, "
            "embedding resized back",
            name, w, h, mp, limit, why, *size,
        )  # fmt: skip
        import cv2

        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return small, size[0] / w

    def extract_many(
        self, images: Iterable[ImageLike], *, return_features: bool = False
    ) -> Iterator[ExtractionResult]:
        """Extract a sequence of images lazily, one result per input, in order."""
        for image in images:
            yield self.extract(image, return_features=return_features)

    def close(self) -> None:
        """Release the backend; the Extractor cannot be used afterwards."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Extractor:
        """Use as a context manager: closed on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the backend."""
        self.close()
