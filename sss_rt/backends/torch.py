"""PyTorch backend: the reference implementation, and a GPU path where TensorRT is absent.

It runs the inference form of the network with weights taken from an sss-rt ONNX model (so it
runs the *same* weights as the other backends) or from a training checkpoint (``.pt``). Split
execution (the default) runs the trunk once per image in PyTorch and evaluates the
full-resolution head in PyTorch for each band asked (:class:`TorchHeadSource`, on the backend's
device); ``execution="whole"`` runs the whole module at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from sss_rt.backends.base import Backend, check_image, release_freed_memory
from sss_rt.backends.support import check_support
from sss_rt.bands import ArraySource, DeviceArraySource, DeviceBand, FeatureSource
from sss_rt.device import CPU, Device
from sss_rt.errors import BackendUnavailableError, ModelError
from sss_rt.families import family_named
from sss_rt.model_info import ModelInfo, read_model_info
from sss_rt.precision import DEFAULT_PRECISION, check_precision
from sss_rt.resample import linear_taps


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise BackendUnavailableError(
            "the torch backend needs PyTorch (pip install 'sss-rt[train]')"
        ) from None
    return torch


_TF32_LOCK = threading.RLock()


@contextlib.contextmanager
def tf32(torch: Any, allow: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matmuls with TF32 on or off for the block (PyTorch's flags
    are process-wide: they are set, and restored after, under one lock, so concurrent blocks
    with different settings never see each other's)."""
    with _TF32_LOCK:
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = allow
        torch.backends.cuda.matmul.allow_tf32 = allow
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self,
        model: str | os.PathLike[str],
        device: str | Device = "auto",
        threads: int | None = None,
        execution: str = "split",
        precision: str = DEFAULT_PRECISION,
    ):
        check_precision(precision)
        dev = check_support(self.name, device, precision, execution)
        torch = _import_torch()
        from sss_rt.export.inference_form import InferenceNet

        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ModelError(f"model file not found: {path}")
        if path.endswith(".onnx"):
            info = read_model_info(path)
            net, info = family_named(info.family).torch_module(path)
        else:
            from sss_rt.network.checkpoint import load_network
            from sss_rt.network.model import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD

            train_net, meta = load_network(path)
            net = InferenceNet(train_net).eval()
            info = ModelInfo(
                meta["backbone"], FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD, training=meta
            )
        if dev.kind == "auto":
            dev = Device("cuda", dev.index) if torch.cuda.is_available() else CPU
        if dev.is_cuda and not torch.cuda.is_available():
            raise BackendUnavailableError("device cuda requested but PyTorch sees no CUDA GPU")
        check_support(self.name, dev, precision, execution)  # tf32 exists on a GPU only
        device = str(dev)
        #: TF32 in cuDNN convolutions and matmuls: only for --precision tf32 (PyTorch enables it
        #: for convolutions by default; fp32 here means IEEE fp32, the CPU pipeline's numbers)
        self.allow_tf32 = precision == "tf32"
        self.precision = precision
        if threads is not None:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self._device = device
        self._net = net.to(device)
        self._info = info
        self._split = execution == "split"
        self.threads = threads

    @property
    def module(self) -> Any:
        """The underlying inference-form ``torch.nn.Module``."""
        return self._net

    @property
    def splits(self) -> bool:
        return self._split

    def features(self, image: np.ndarray, *, whole: bool = False) -> FeatureSource:
        torch = self._torch
        x = torch.from_numpy(check_image(image)[None]).to(self._device)
        net = self._net
        on_gpu = x.device.type == "cuda"
        with torch.inference_mode(), tf32(torch, self.allow_tf32):
            # a family whose trunk cannot run in bands (per-image statistics) makes its own
            # split source; on a GPU it runs whole
            own = getattr(net, "trunk_source", None)
            if own is not None and self._split and not whole and not on_gpu:
                return own(x, self.threads)
            if whole or not self._split or own is not None:
                # C-contiguous (the net may return channels-last memory; the post-processing
                # reads planes, and a strided array would be copied there, single-threaded)
                out = net(x)[0].float().contiguous()
                if on_gpu:
                    torch.cuda.current_stream(x.device).synchronize()  # ready for any stream
                    return TorchDeviceSource(out)
                return ArraySource(out.cpu().numpy())
            t_in, t_p1, deep = self._trunk(x)
        if on_gpu:  # the head's bands then run on the consumer's stream, after the trunk
            torch.cuda.current_stream(x.device).synchronize()
        else:
            release_freed_memory()  # the trunk's activations, before the post-processing
        return TorchHeadSource(net, t_in[0], t_p1[0], deep[0], allow_tf32=self.allow_tf32)

    def _trunk(self, image: Any) -> tuple[Any, Any, Any]:
        """The trunk's outputs t_in, t_p1, deep (1×C×h×w) of a 1×H×W×3 uint8 tensor, in an
        order that bounds memory: the full- and half-resolution layers (the stem, the input
        tap) and every tap run in bands of rows with the halo their convolutions need, and
        only the pool1 activation and the deep sum are held while the deep layers run — the
        taps' outputs are made afterwards. The same values as the whole module."""
        torch = self._torch
        net, bb = self._net, self._net.backbone
        rows = max(16, (self.BAND_MB << 20) // (64 * image.shape[2] * 4))
        pool1 = _banded_stem(net, image, rows)
        res3 = bb.layer2(bb.layer1(pool1))
        weight = net.fuse_deep.weight
        widths = [tap.out_channels for tap in net.taps[2:]]
        starts = np.cumsum([0, *widths[:-1]])
        parts = [weight[:, a : a + n] for a, n in zip(starts, widths, strict=True)]

        def project(i: int, crop: Any) -> Any:
            return torch.nn.functional.conv2d(F_relu(net.taps[2 + i](crop)), parts[i])

        deep = torch.empty((1, weight.shape[0], *res3.shape[2:]), device=res3.device)
        _banded(lambda crop: project(0, crop), res3, deep, rows)
        # layer3 and layer4 keep the resolution (dilated): square tiles with the halo of all
        # their convolutions and of the taps, when one 512-channel activation is large
        halo = _row_halo(bb.layer3, bb.layer4)
        side = max(res3.shape[2:])
        if halo is not None and 4 * max(widths) * res3.shape[2] * res3.shape[3] > (
            self.DEEP_TILE_MB << 20
        ):
            side = max(2 * halo + 2, int((self.DEEP_TILE_MB << 20) / (4 * max(widths))) ** 0.5)
            side = max(halo + 1, int(side) - 2 * (halo + 1))

        def deep_layers(crop: Any) -> Any:
            r4 = bb.layer3(crop)
            out = project(1, r4)
            r4 = bb.layer4(r4)
            return out.add_(project(2, r4))

        _tiled(deep_layers, res3, deep, side, halo=(halo or 0) + 1)
        del res3
        t_p1 = torch.empty(
            (1, net.taps[1].out_channels, *pool1.shape[2:]), dtype=pool1.dtype, device=pool1.device
        )
        _banded(lambda crop: F_relu(net.taps[1](crop)), pool1, t_p1, rows)
        del pool1
        h, w = image.shape[1:3]
        t_in = torch.empty((1, net.taps[0].out_channels, h, w), device=image.device)
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            s0, e = max(0, y0 - 1), min(h, y1 + 1)
            crop = F_relu(net.taps[0](net.normalize(image[:, s0:e])))
            t_in[:, :, y0:y1] = crop[:, :, y0 - s0 : y1 - s0]
        return t_in, t_p1, deep

    #: rows of the full- and half-resolution layers are computed about this many MB at a time
    BAND_MB = 64
    #: the dilated deep layers run in tiles when one of their activations exceeds this
    DEEP_TILE_MB = 192

    def close(self) -> None:
        self._net = None
        if Device.parse(self._device).is_cuda:
            self._torch.cuda.empty_cache()


def _banded(fn: Any, src: Any, out: Any, rows: int, halo: int = 1, add: bool = False) -> None:
    """``out = fn(src)`` (or ``+=``) for a row-preserving ``fn`` whose output rows need
    ``halo`` input rows on each side (a 3×3 conv), computed ``rows`` rows at a time."""
    n = src.shape[2]
    for y0 in range(0, n, rows):
        y1 = min(n, y0 + rows)
        s0, e = max(0, y0 - halo), min(n, y1 + halo)
        part = fn(src[:, :, s0:e])[:, :, y0 - s0 : y1 - s0]
        if add:
            out[:, :, y0:y1] += part
        else:
            out[:, :, y0:y1] = part


def _tiled(fn: Any, src: Any, out: Any, side: int, halo: int) -> None:
    """``out += fn(src)`` for a resolution-preserving ``fn`` whose outputs need ``halo``
    pixels of context on each side, computed on ``side``×``side`` tiles (zero padding inside
    ``fn`` then only ever touches discarded margins, unless at the image's own edges)."""
    h, w = src.shape[2:]
    for y0 in range(0, h, side):
        for x0 in range(0, w, side):
            y1, x1 = min(h, y0 + side), min(w, x0 + side)
            a, b = max(0, y0 - halo), min(h, y1 + halo)
            c, d = max(0, x0 - halo), min(w, x1 + halo)
            part = fn(src[:, :, a:b, c:d])
            out[:, :, y0:y1, x0:x1] += part[:, :, y0 - a : y1 - a, x0 - c : x1 - c]


def _row_halo(*layers: Any) -> int | None:
    """Rows of context on each side that a stack of stride-1 layers needs (the sum of every
    convolution's reach), or None if any of them changes the resolution."""
    import torch

    halo = 0
    for layer in layers:
        for m in layer.modules():
            if isinstance(m, torch.nn.Conv2d):
                if m.stride != (1, 1):
                    return None
                halo += m.dilation[0] * (m.kernel_size[0] - 1) // 2
    return halo


def _banded_stem(net: Any, image: Any, rows: int) -> Any:
    """pool1 = maxpool(relu(conv1(normalize(image)))) in bands of input rows: the 1/2-resolution
    conv1 output (64 channels) is never held whole. Exact for the ResNet stem (7×7 stride-2
    conv, padding 3; 3×3 stride-2 max pool, padding 1): each band of pool1 rows p0:p1 reads the
    input rows 4·p0 − 8 … 4·p1 + 8 (a multiple of 4 first, so the strides keep their phase)."""
    import torch

    bb = net.backbone
    conv, pool = bb.conv1, bb.maxpool

    def stem(x: Any) -> Any:
        return pool(bb.relu(bb.bn1(conv(net.normalize(x)))))

    standard = (
        conv.kernel_size == (7, 7) and conv.stride == (2, 2) and conv.padding == (3, 3)
        and pool.kernel_size in (3, (3, 3)) and pool.stride in (2, (2, 2))
        and pool.padding in (1, (1, 1))
    )  # fmt: skip
    h = image.shape[1]
    if not standard:
        return stem(image)
    hp = ((h - 1) // 2 + 1 - 1) // 2 + 1
    band_rows = max(1, rows // 4)
    out = None
    for p0 in range(0, hp, band_rows):
        p1 = min(hp, p0 + band_rows)
        s0, e = max(0, 4 * p0 - 8), min(h, 4 * p1 + 8)
        part = stem(image[:, s0:e])
        m0 = p0 - s0 // 4
        if out is None:
            out = torch.empty((1, part.shape[1], hp, part.shape[3]), device=part.device)
        out[:, :, p0:p1] = part[:, :, m0 : m0 + p1 - p0]
    return out


def F_relu(x: Any) -> Any:
    import torch.nn.functional as F

    return F.relu(x, inplace=True)


class TorchHeadSource(FeatureSource):
    """The inference form's full-resolution head in PyTorch, for any band of rows, on the
    trunk's device; bands come back as host arrays (``device_rows``: as device tensors)."""

    CHUNK_MB = 64

    def __init__(self, net: Any, t_in: Any, t_p1: Any, deep: Any, allow_tf32: bool = False):
        import torch

        self._torch = torch
        self.allow_tf32 = allow_tf32
        self.net = net
        self.t_in, self.t_p1, self.deep = t_in, t_p1, deep
        _, self.height, self.width = t_in.shape
        self.channels = net.head.out_channels
        dev = t_in.device

        def taps(out: int, size: int) -> tuple:
            i0, i1, wt = linear_taps(out, size)
            return (
                torch.from_numpy(i0).to(dev),
                torch.from_numpy(i1).to(dev),
                torch.from_numpy(wt).to(dev),
            )

        self._y = (taps(self.height, t_p1.shape[1]), taps(self.height, deep.shape[1]))
        self._x = (taps(self.width, t_p1.shape[2]), taps(self.width, deep.shape[2]))

    @property
    def on_device(self) -> bool:  # type: ignore[override]
        return bool(self.t_in.device.type == "cuda")

    def device_band(self, y0: int, y1: int, runtime: Any, stream: Any) -> DeviceBand:
        """On a CUDA device, the band computed by the head on the consumer's ``stream`` (a
        PyTorch ``ExternalStream`` over it); its tensor is the band's memory."""
        if not self.on_device:
            return super().device_band(y0, y1, runtime, stream)
        torch = self._torch
        external = torch.cuda.ExternalStream(stream.handle, device=self.t_in.device)
        with torch.cuda.stream(external):
            band = self.device_rows(y0, y1).contiguous()
        return DeviceBand(band.data_ptr(), tuple(band.shape), np.dtype(np.float32), band)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.device_rows(y0, y1).cpu().numpy()

    def region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.device_rows(y0, y1, x0, x1).cpu().numpy()

    def projected_rows(
        self,
        y0: int,
        y1: int,
        components: np.ndarray,
        shift: np.ndarray,
        threads: int | None = None,
    ) -> np.ndarray:
        """The projection folded into the last conv, in float64 (no 128-channel band)."""
        torch = self._torch
        head = self.net.head
        v = torch.from_numpy(np.asarray(components, np.float64)).to(self.t_in.device)
        s = torch.from_numpy(np.asarray(shift, np.float64)).to(self.t_in.device)
        weight = v @ head.weight[:, :, 0, 0].double()
        bias = v @ (head.bias.double() - s)
        return self.device_rows(y0, y1, project=(weight, bias)).cpu().numpy()

    def device_rows(
        self, y0: int, y1: int, x0: int = 0, x1: int | None = None, project: Any = None
    ) -> Any:
        """Rows ``y0:y1`` (columns ``x0:x1``) as a C×n×w float32 tensor on the device."""
        torch = self._torch
        net = self.net
        x1 = self.width if x1 is None else x1
        width = x1 - x0
        mid = net.fuse_bias.shape[1]
        out_c = self.channels if project is None else project[0].shape[0]
        out = torch.empty((out_c, y1 - y0, width), dtype=torch.float32, device=self.t_in.device)
        step = max(1, (self.CHUNK_MB << 20) // (mid * width * 4))
        with torch.inference_mode(), tf32(torch, self.allow_tf32):
            for a in range(y0, y1, step):
                b = min(y1, a + step)
                hidden = self._hidden(a, b, x0, x1)
                if project is None:
                    res = torch.nn.functional.conv2d(hidden[None], net.head.weight, net.head.bias)
                    out[:, a - y0 : b - y0] = res[0]
                else:
                    weight, bias = project
                    flat = hidden.reshape(mid, -1).double()
                    res = weight @ flat + bias[:, None]
                    out[:, a - y0 : b - y0] = res.float().reshape(out_c, b - a, width)
        # the chunks' temporaries back to the system: kept in the heap they added ~0.2 GB to a
        # 24 MP image's peak in the exact mode (measured at 6 MP: 1946 → 1893 MB)
        if not self.on_device:
            release_freed_memory()
        return out

    def _hidden(self, y0: int, y1: int, x0: int, x1: int) -> Any:
        torch = self._torch
        net = self.net
        h = torch.nn.functional.conv2d(self.t_in[None, :, y0:y1, x0:x1], net.fuse_input.weight)[0]
        for low, ys, xs, project in (
            (self.t_p1, self._y[0], self._x[0], net.fuse_pool1),
            (self.deep, self._y[1], self._x[1], None),
        ):
            i0, i1, wy = (t[y0:y1] for t in ys)
            lo, hi = int(i0.min()), int(i1.max()) + 1
            block = low[:, lo:hi]
            if project is not None:
                block = torch.nn.functional.conv2d(block[None], project.weight)[0]
            top, bottom = block[:, i0 - lo], block[:, i1 - lo]
            rows = torch.lerp(top, bottom, wy[None, :, None])
            xi0, xi1, xw = (t[x0:x1] for t in xs)
            h += torch.lerp(rows[:, :, xi0], rows[:, :, xi1], xw[None, None, :])
        h += net.fuse_bias[0]
        return torch.relu_(h)


class TorchDeviceSource(DeviceArraySource):
    """A whole-graph output on a CUDA device, C×H×W float32 contiguous: device bands are
    offsets into the tensor (as for any device array); host bands are copied out by PyTorch,
    which needs no pycuda."""

    def __init__(self, tensor: Any):
        super().__init__(tensor.data_ptr(), tuple(tensor.shape), np.float32, None, owner=tensor)
        self.tensor = tensor

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.tensor[:, y0:y1].cpu().numpy()
