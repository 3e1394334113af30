"""A minimal writer of TensorFlow V2 checkpoints, for tests only (no TensorFlow in CI).

Written from the format's description (see ``export/tf_checkpoint.py``): one data shard, a
data block of entries without key sharing (one restart point each 16 entries), an empty
meta-index block, an index block with one handle, the footer. The reader's tests on files
TensorFlow wrote (``tests/authors/checkpoints``) are what tie the reader to TensorFlow; this
writer lets the import tests make a full-size checkpoint of seeded weights, and makes the
damaged files the error tests need (``compress_first_block``).
"""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c
import numpy as np

_TYPES = {
    np.dtype("float32"): 1,
    np.dtype("float64"): 2,
    np.dtype("int32"): 3,
    np.dtype("int64"): 9,
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(int(payload))  # type: ignore[arg-type]
    if wire == 5:
        return key + struct.pack("<I", payload)
    return key + _varint(len(payload)) + payload  # type: ignore[arg-type]


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body, restarts = bytearray(), []
    for i, (key, value) in enumerate(entries):
        if i % 16 == 0:
            restarts.append(len(body))
        body += _varint(0) + _varint(len(key)) + _varint(len(value)) + key + value
    restarts = restarts or [0]
    body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(body)


def write_checkpoint(prefix: str | Path, tensors: dict[str, np.ndarray]) -> Path:
    """Write ``tensors`` as ``prefix.index`` + ``prefix.data-00000-of-00001`` and a
    ``checkpoint`` file beside them; returns the prefix."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    entries = [(b"", _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1)))]
    offset = 0
    with open(f"{prefix}.data-00000-of-00001", "wb") as data:
        for name in sorted(tensors):
            arr = np.array(tensors[name], order="C")
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            shape = b"".join(_field(2, 2, _field(1, 0, d)) for d in arr.shape)
            entry = _field(1, 0, _TYPES[arr.dtype]) + _field(2, 2, shape)
            entry += _field(4, 0, offset) if offset else b""
            entry += _field(5, 0, len(raw)) + _field(6, 5, _mask(google_crc32c.value(raw)))
            entries.append((name.encode(), entry))
            data.write(raw)
            offset += len(raw)
    out = bytearray()
    handles = []
    for block in (_block(entries), _block([])):
        handles.append(_varint(len(out)) + _varint(len(block)))
        trailer = b"\x00"
        out += block + trailer + struct.pack("<I", _mask(google_crc32c.value(block + trailer)))
    index = _block([(entries[-1][0] + b"\xff", handles[0])])
    index_handle = _varint(len(out)) + _varint(len(index))
    out += index + b"\x00" + struct.pack("<I", _mask(google_crc32c.value(index + b"\x00")))
    footer = handles[1] + index_handle
    out += footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(bytes(out))
    (prefix.parent / "checkpoint").write_text(f'model_checkpoint_path: "{prefix.name}"\n')
    return prefix


def compress_first_block(index: str | Path) -> None:
    """Mark the first block of an index as Snappy-compressed (type 1), its CRC made valid."""
    data = bytearray(Path(index).read_bytes())
    footer = data[-48:]
    # the first data block starts at 0; find its end from the index block's first handle
    pos = 0
    for _ in range(2):  # skip the meta-index handle
        while footer[pos] & 0x80:
            pos += 1
        pos += 1
    from sss_rt.export.tf_checkpoint import CheckpointReader, _block_entries, _varint

    index_offset, p = _varint(bytes(footer), pos)
    index_size, _ = _varint(bytes(footer), p)
    block = CheckpointReader._block(bytes(data), index_offset, index_size)
    handle = next(_block_entries(block))[1]
    offset, p = _varint(handle, 0)
    size, _ = _varint(handle, p)
    data[offset + size] = 1
    crc = google_crc32c.value(bytes(data[offset : offset + size + 1]))
    data[offset + size + 1 : offset + size + 5] = struct.pack("<I", _mask(crc))
    Path(index).write_bytes(bytes(data))
