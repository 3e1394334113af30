"""Fuzzing the image loader with hypothesis: valid PNG, JPEG, TIFF, BMP and WebP files mutated
(bytes flipped, cut, inserted, header sizes rewritten) or pure noise. Whatever the bytes, the
loader returns an H×W×3 uint8 image within its decode allowance or raises ``ImageError``: never
another exception, never a crash, and memory stays bounded (the header is checked first)."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sss_rt.errors import ImageError
from sss_rt.io.images import DECODE_FACTOR, decode_image

FORMATS = ("png", "jpg", "tif", "bmp", "webp")
LIMIT_MP = 0.5


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), (0, 0), 2)
    return {ext: cv2.imencode(f".{ext}", photo)[1].tobytes() for ext in FORMATS}


SEEDS = _seeds()


def resize_header(data: bytearray, ext: str, width: int, height: int) -> None:
    """Rewrite the image's own size fields, keeping the file otherwise consistent (a PNG's CRC
    is recomputed): a header that lies about the pixel count."""
    if ext == "png":
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif ext == "jpg":
        sof = data.find(b"\xff\xc0")
        if sof >= 0:
            data[sof + 5 : sof + 9] = struct.pack(">HH", min(height, 65535), min(width, 65535))
    elif ext == "bmp":
        data[18:26] = struct.pack("<ii", min(width, 2**31 - 1), min(height, 2**31 - 1))


@st.composite
def mutated(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    ext = draw(st.sampled_from(FORMATS))
    data = bytearray(SEEDS[ext])
    if draw(st.booleans()):
        sizes = st.sampled_from([1, 57, 3000, 65_000, 100_000, 2**31 - 1])
        resize_header(data, ext, draw(sizes), draw(sizes))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "size", "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "size" and len(data) > pos + 8:  # a plausible width/height field, rewritten
            value = draw(st.sampled_from([0, 1, 65535, 100_000, 2**31 - 1, 2**32 - 1]))
            data[pos : pos + 4] = struct.pack(">I", value)
        elif kind == "zero":
            data[pos : pos + 16] = bytes(min(16, len(data) - pos))
    return bytes(data)


FUZZ_CASES = 2000


@settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated())
def test_loader_never_raises_anything_but_image_error(data):
    try:
        image = decode_image(data, "fuzz", max_megapixels=LIMIT_MP)
    except ImageError as exc:
        assert str(exc).startswith("fuzz") and "\n" not in str(exc)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= DECODE_FACTOR * LIMIT_MP * 1e6


def test_lying_headers_keep_memory_bounded():
    """A fresh process decodes files whose headers claim 100 000² pixels (30 GB decoded) in
    every format that can say so: its peak RSS stays that of the interpreter and libraries."""
    code = (
        "import sys; sys.path.insert(0, 'tests');"
        "from test_image_fuzz import SEEDS, resize_header;"
        "from sss_rt.io.images import decode_image; from sss_rt.errors import ImageError\n"
        "for ext in ('png', 'jpg', 'bmp'):\n"
        "    data = bytearray(SEEDS[ext]); resize_header(data, ext, 100_000, 100_000)\n"
        "    for limit in (None, 64.0):\n"
        "        try: decode_image(bytes(data), ext, limit)\n"
        "        except ImageError: pass\n"
        # VmHWM, not ru_maxrss: the latter carries the parent's peak across fork and exec
        "print([int(line.split()[1]) for line in open('/proc/self/status')"
        " if line.startswith('VmHWM')][0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) < 1 << 20  # KB: under 1 GB
