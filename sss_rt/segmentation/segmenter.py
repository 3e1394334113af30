"""SoftSegmenter: photo (and its semantic features) → soft layers that sum to one."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sss_rt import blas
from sss_rt.native import beside
from sss_rt.segmentation import affinity, eigen, sparsify, superpixels
from sss_rt.segmentation.enlarge import enlarge_layers
from sss_rt.segmentation.gradient import gradient_magnitude


@dataclass(frozen=True)
class SegmentConfig:
    """The algorithm's settings (the authors' values by default).

    Attributes
    ----------
    scale : float
        In (0, 1]: the photo is resized by it before the eigenvectors and everything after (the
        authors' demo halves it); the layers are resized back to the photo's size.
    max_pixels : int
        The size segmented is at most this many pixels, the scale lowered for larger photos
        (0: no limit). Time and memory grow faster than the pixel count: 640×480 at full
        resolution measured 39 s and 2.6 GB on 2 AMD EPYC cores (320×240: 10 s, 0.9 GB).
    superpixels : int
        SLIC-zero superpixels (2,500).
    eigenvectors : int
        Eigenvectors of the Laplacian the segments are made of (100).
    initial_segments : int
        k-means segments the sparsification starts from (40).
    iterations : int
        Constrained sparsification iterations (40).
    layers : int
        Soft layers written (5; at most ``initial_segments``).
    relaxed_iterations : int
        Relaxed sparsification iterations (20).
    seed : int
        Seed of k-means and the eigensolver's start.

    Raises
    ------
    ValueError
        An out-of-range setting (named in the message).
    """

    scale: float = 0.5
    max_pixels: int = 640 * 480
    superpixels: int = 2500
    eigenvectors: int = 100
    initial_segments: int = 40
    iterations: int = 40
    layers: int = 5
    relaxed_iterations: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")
        for name in ("superpixels", "eigenvectors", "initial_segments", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1")
        if self.layers > self.initial_segments:
            raise ValueError("layers must not exceed initial_segments")
        if self.max_pixels < 0 or 0 < self.max_pixels < 9:
            raise ValueError(f"max_pixels must be 0 (no limit) or ≥ 9, got {self.max_pixels}")

    def working_shape(self, h: int, w: int) -> tuple[int, int]:
        """The (height, width) a photo of h×w is segmented at."""
        scale = self.scale
        if self.max_pixels and h * w * scale * scale > self.max_pixels:
            scale = (self.max_pixels / (h * w)) ** 0.5
        sh, sw = max(3, round(h * scale)), max(3, round(w * scale))
        while self.max_pixels and sh * sw > self.max_pixels and min(sh, sw) > 3:
            sh, sw = max(3, sh - 1), max(3, round(sw * (sh - 1) / sh))  # rounding up overshot
        return sh, sw

    def feature_shape(self, h: int, w: int) -> tuple[int, int]:
        """The (height, width) the segmenter computes an h×w photo's features at.

        The photo's, or for a photo over 4× the working size, twice the working size (as the
        authors' demo: features at the photo's size, segmented at half of it) — the network
        need not run at 12 MP to give features for 0.3 MP.
        """
        sh, sw = self.working_shape(h, w)
        if h * w <= 4 * sh * sw:
            return h, w
        return min(h, 2 * sh), min(w, 2 * sw)


@dataclass
class SoftSegmentation:
    """Soft layers of one photo (:meth:`SoftSegmenter.segment`).

    Attributes
    ----------
    alphas : ndarray
        H×W×K float32 in [0, 1], each pixel summing to 1, largest layer first.
    embedding : ndarray
        h×w×3 float32: the semantic features the layers came from, at the photo's size or, for
        photos over 4× the working size, at :meth:`SegmentConfig.feature_shape`.
    image : ndarray
        H×W×3 uint8 RGB.
    timings : dict
        Seconds per stage.
    source : Path or None
        The file the photo came from.
    working_shape : tuple or None
        The (height, width) it was segmented at.
    """

    alphas: np.ndarray  #: H×W×K float32 in [0, 1], each pixel summing to 1
    embedding: np.ndarray  #: h×w×3 float32: the features the layers came from (see above)
    image: np.ndarray  #: H×W×3 uint8 RGB
    timings: dict[str, float] = field(default_factory=dict)  #: seconds per stage
    source: Path | None = None
    working_shape: tuple[int, int] | None = None  #: the (height, width) it was segmented at

    @property
    def count(self) -> int:
        """The number of layers, K."""
        return self.alphas.shape[2]


class SoftSegmenter:
    """Semantic Soft Segmentation of photos.

    Parameters
    ----------
    extractor : Extractor, optional
        Computes features when none are given (default: one made from ``extractor_options``,
        e.g. ``precision="auto"``, on first use; closed with the segmenter).
    config : SegmentConfig, optional
        The algorithm's settings.
    **extractor_options
        :class:`~sss_rt.Extractor` options for the extractor made on first use.

    Examples
    --------
    >>> with SoftSegmenter() as seg:                  # doctest: +SKIP
    ...     layers = seg.segment("photo.jpg").alphas  # H×W×5, summing to 1
    """

    def __init__(
        self,
        extractor: Any = None,
        config: SegmentConfig | None = None,
        **extractor_options: Any,
    ) -> None:
        self.config = config or SegmentConfig()
        self._extractor = extractor
        self._own = extractor is None
        self._options = extractor_options
        self._made = threading.Lock()

    @property
    def extractor(self) -> Any:
        """The Extractor computing features (made on first use)."""
        with self._made:  # threads sharing a segmenter share one extractor
            if self._extractor is None:
                from sss_rt.extractor import Extractor

                self._extractor = Extractor(**self._options)
            return self._extractor

    def segment(
        self,
        image: Any,
        embedding: np.ndarray | None = None,
        *,
        source: Path | None = None,
        progress: Callable[[str], None] | None = None,
        features: np.ndarray | None = None,
    ) -> SoftSegmentation:
        """Soft layers of one photo.

        Parameters
        ----------
        image : ndarray or str or Path
            H×W×3 uint8 RGB, or an image file.
        embedding : ndarray, optional
            Its H×W×d float embedding (d = 3 from :class:`~sss_rt.Extractor`, values in [0, 1]),
            or one at :meth:`SegmentConfig.feature_shape`; computed with the extractor at that
            size when None.
        source : Path, optional
            The file the photo came from (kept in the result).
        progress : callable, optional
            Called with each stage's name as it starts (``STAGES``).
        features : ndarray, optional
            Deprecated spelling of ``embedding`` (``features`` is the raw 128-d network output
            everywhere else).

        Returns
        -------
        SoftSegmentation

        Raises
        ------
        ValueError
            Image or features of the wrong shape or type.
        ImageError
            An unreadable image file.
        """
        report = progress or (lambda name: None)
        from sss_rt.io.images import load_image

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if isinstance(image, str | Path):
            source = Path(image)
            image = load_image(image)
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.shape} {image.dtype}")
        embedding = _embedding_argument(embedding, features)
        fh, fw = self.config.feature_shape(*image.shape[:2])
        if embedding is None:
            report("embedding")
            small = image
            if (fh, fw) != image.shape[:2]:
                small = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_AREA)
            embedding = self.extractor.extract(small).embedding
            timings["embedding"] = time.perf_counter() - t0
        embedding = np.asarray(embedding, np.float32)
        if embedding.ndim != 3 or embedding.shape[:2] not in (image.shape[:2], (fh, fw)):
            raise ValueError(
                f"embedding {embedding.shape} does not match the image {image.shape[:2]}"
            )
        alphas = segment_arrays(image, embedding, self.config, timings, report)
        shape = self.config.working_shape(*image.shape[:2])
        return SoftSegmentation(alphas, embedding, image, timings, source, shape)

    def close(self) -> None:
        """Close the extractor this segmenter made."""
        if self._own and self._extractor is not None:
            self._extractor.close()
        self._extractor = None if self._own else self._extractor

    def __enter__(self) -> SoftSegmenter:
        """Use as a context manager: closed on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the extractor this segmenter made."""
        self.close()


def segment(
    image: Any,
    embedding: np.ndarray | None = None,
    config: SegmentConfig | None = None,
    *,
    features: np.ndarray | None = None,
) -> SoftSegmentation:
    """Soft layers of ``image`` in one call (its embedding computed if not given).

    Parameters
    ----------
    image : ndarray or str or Path
        H×W×3 uint8 RGB, or an image file.
    embedding : ndarray, optional
        Its H×W×3 embedding in [0, 1].
    config : SegmentConfig, optional
    features : ndarray, optional
        Deprecated spelling of ``embedding``.

    Returns
    -------
    SoftSegmentation
        ``alphas``: H×W×K float32, summing to 1 per pixel.
    """
    with SoftSegmenter(config=config) as seg:
        return seg.segment(image, _embedding_argument(embedding, features))


def _embedding_argument(embedding: Any, features: Any) -> Any:
    """``embedding``, or the deprecated ``features=`` keyword standing for it."""
    if features is None:
        return embedding
    if embedding is not None:
        raise TypeError("give embedding= only (features= is its deprecated spelling)")
    warnings.warn(
        "segment(features=...) is deprecated: the argument is the 3-d embedding; use embedding=",
        DeprecationWarning,
        stacklevel=3,
    )
    return features


def _stage(timings: dict[str, float], name: str, t: float) -> float:
    now = time.perf_counter()
    timings[name] = now - t
    return now


@dataclass
class SegmentWork:
    """What one segmentation did, stage by stage, for benchmarks and diagnostics.

    Filled in by :func:`segment_arrays` when it is given one (a uniform photo, answered at
    once, leaves it as made).
    """

    shape: tuple[int, int] = (0, 0)  #: the working size segmented, (h, w)
    laplacian_nnz: int = 0  #: L's stored non-zeros
    eigenvectors: int = 0  #: eigenvectors the segments are made of (m)
    #: the eigensolver's solves and factorization (:class:`eigen.EigenStats`)
    eigensolver: eigen.EigenStats = field(default_factory=eigen.EigenStats)
    #: the constrained sparsification's segments and Gram pairs per iteration (no energies)
    constrained: sparsify.SparsifyTrace = field(
        default_factory=lambda: sparsify.SparsifyTrace(record_energy=False)
    )
    cg_steps: list[int] = field(default_factory=list)  #: the relaxed step's CG steps per solve
    layers: int = 0  #: layers out of the relaxed sparsification (before padding to K)


#: the stages of one segmentation, in order, as ``progress`` callbacks name them
STAGES = (
    "embedding",
    "superpixels",
    "affinities",
    "eigenvectors",
    "constrained sparsification",
    "relaxed sparsification",
    "resize",
)


def segment_arrays(
    image: np.ndarray,
    features: np.ndarray,
    config: SegmentConfig,
    timings: dict[str, float] | None = None,
    progress: Callable[[str], None] | None = None,
    work: SegmentWork | None = None,
) -> np.ndarray:
    """Run the algorithm on arrays: H×W×3 uint8 photo, H×W×d features → H×W×K float32.

    ``progress``: called with each stage's name (``STAGES``) as it starts; ``work``: receives
    what each stage did (:class:`SegmentWork`). BLAS runs on one thread meanwhile
    (:mod:`sss_rt.blas`): the layers never depend on its thread count or on other work in the
    process.
    """
    with blas.one_thread():
        return _segment_arrays(image, features, config, timings, progress, work)


def _segment_arrays(
    image: np.ndarray,
    features: np.ndarray,
    config: SegmentConfig,
    timings: dict[str, float] | None,
    progress: Callable[[str], None] | None,
    work: SegmentWork | None,
) -> np.ndarray:
    timings = {} if timings is None else timings
    report = progress or (lambda name: None)
    h, w = image.shape[:2]
    t = time.perf_counter()
    sh, sw = config.working_shape(h, w)
    img = _at_working_size(image, (sh, sw)) / 255.0
    feat = _at_working_size(features, (sh, sw))
    if np.ptp(image) == 0 and np.ptp(features) == 0:
        # one colour and one feature everywhere: L is the matting Laplacian of a constant
        # image, whose null space is every layer pattern at once — the one answer that does not
        # depend on the eigensolver's start is a single layer (4.4 s to reach it at 320×240)
        out = np.zeros((h, w, config.layers), np.float32)
        out[..., 0] = 1.0
        for name in STAGES[1:]:
            timings[name.replace(" ", "_")] = 0.0
        return out
    n = sh * sw
    flat = feat.reshape(n, -1)
    # the initial segments' k-means needs the features alone: it runs beside the superpixels
    # and affinities (single-threaded stages) instead of inside the constrained step's time
    clusters = beside(_initial_labels, flat, config.initial_segments, config.seed)
    report("superpixels")
    labels = superpixels.slic_zero(img, config.superpixels)
    sp_ = superpixels.describe(labels, img, feat)
    t = _stage(timings, "superpixels", t)
    report("affinities")
    lap = affinity.segmentation_laplacian(img, sp_)
    t = _stage(timings, "affinities", t)
    traced = work is not None  # the Gram pairs' count costs a pass over the weights per iteration
    work = SegmentWork() if work is None else work
    work.shape, work.laplacian_nnz = (sh, sw), int(lap.nnz)
    report("eigenvectors")
    vals, vecs = eigen.smallest_eigenvectors(
        lap, config.eigenvectors, config.seed, stats=work.eigensolver, shape=(sh, sw)
    )
    work.eigenvectors = vecs.shape[1]
    t = _stage(timings, "eigenvectors", t)
    report("constrained sparsification")
    initial = _one_hot(clusters.result())
    alpha = sparsify.constrained_sparsification(
        vecs, vals, lap, initial, config.iterations, trace=work.constrained if traced else None
    )
    t = _stage(timings, "constrained_sparsification", t)
    report("relaxed sparsification")
    grouped = sparsify.group_segments(alpha, flat, config.layers, config.seed)
    exponent = 0.9 + np.minimum(gradient_magnitude(img), 0.1).ravel()
    layers = sparsify.relaxed_sparsification(
        grouped, lap, exponent, iterations=config.relaxed_iterations, cg_steps=work.cg_steps
    )
    work.layers = layers.shape[1]
    t = _stage(timings, "relaxed_sparsification", t)
    report("resize")
    order = np.argsort(-layers.sum(axis=0))  # largest layer first
    layers = layers[:, order]
    if layers.shape[1] < config.layers:  # fewer survived: empty layers keep K fixed
        layers = np.pad(layers, ((0, 0), (0, config.layers - layers.shape[1])))
    out = enlarge_layers(layers.reshape(sh, sw, -1), (h, w))
    _stage(timings, "resize", t)
    return out


def _at_working_size(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """H×W×d photo or features → the working size's h×w×d float64 (area averages).

    Inputs over 4× the working size are reduced from a float32 copy (a float64 one of a 12 MP
    photo alone is 288 MB; the averages differ by ~1e-7), smaller ones from float64 as before.
    """
    h, w = a.shape[:2]
    sh, sw = shape
    if (sh, sw) == (h, w):
        return a.astype(np.float64).reshape(h, w, -1)
    if a.dtype == np.float64 or h * w <= 4 * sh * sw:  # small: at once, in float64
        out = cv2.resize(a.astype(np.float64), (sw, sh), interpolation=cv2.INTER_AREA)
    else:
        out = cv2.resize(a.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    return np.asarray(out, np.float64).reshape(sh, sw, -1)


def _initial_segments(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """One-hot N×k initial segments from k-means on the per-pixel features (N×d).

    Column-major: the constrained sparsification takes its segments by rows.
    """
    return _one_hot(_initial_labels(features, k, seed))


def _initial_labels(features: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each pixel's k-means cluster (N,) on the per-pixel features (N×d), numbered 0 .. k' − 1.

    k' ≤ k: no more clusters than distinct feature values, empty ones dropped.
    """
    from scipy.cluster.vq import kmeans2

    distinct = len(np.unique(features[:: max(1, len(features) // 20000)], axis=0))
    k = max(1, min(k, distinct))  # no more segments than distinct feature values
    with warnings.catch_warnings():  # an empty cluster is dropped below
        warnings.simplefilter("ignore")
        _, label = kmeans2(features, _kmeans_plus_plus(features, k, seed), minit="matrix")
    return np.unique(label, return_inverse=True)[1].ravel()


def _one_hot(labels: np.ndarray) -> np.ndarray:
    """N×k' one-hot of labels 0 .. k' − 1, column-major."""
    onehot = np.zeros((int(labels.max()) + 1, len(labels)))
    onehot[labels, np.arange(len(labels))] = 1.0
    return onehot.T


def _kmeans_plus_plus(data: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Starting centres (k×d float64) for k-means of the rows of ``data`` (N×d) by k-means++.

    Each next centre is drawn with probability ∝ the squared distance to the nearest one so
    far. These are the centres SciPy's ``kmeans2(data, k, minit="++", seed=seed)`` starts from
    — the same random stream, the same distances (``cdist``), the same draws — with each
    point's distance to its nearest centre kept as a running minimum, where SciPy's computes
    the distances to every centre again at each step (0.9 s of its 1.2 s at 640×480; this
    takes ~0.1 s).
    """
    from scipy.spatial.distance import cdist

    rng = np.random.RandomState(seed)  # what kmeans2 makes of an integer seed
    centres = np.empty((k, data.shape[1]))
    centres[0] = data[rng.randint(len(data), dtype=np.int64)]
    nearest = np.full(len(data), np.inf)
    for i in range(1, k):
        np.minimum(nearest, cdist(centres[i - 1 : i], data, "sqeuclidean")[0], out=nearest)
        cumulative = (nearest / nearest.sum()).cumsum()
        centres[i] = data[int(np.searchsorted(cumulative, rng.uniform()))]
    return centres
