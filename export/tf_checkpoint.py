"""Reading TensorFlow checkpoints (Saver V2 "tensor bundles") with NumPy, no TensorFlow.

A V2 checkpoint is ``PREFIX.index`` — an immutable sorted table (LevelDB's SSTable format:
prefix-compressed keys in blocks with restart points, each block followed by a compression
byte and a masked CRC32C, an index block of block handles, a 48-byte footer ending in a magic
number) mapping each tensor name to a ``BundleEntryProto`` (dtype, shape, shard, offset,
size, CRC32C of the bytes), the empty key to a ``BundleHeaderProto`` (shard count,
endianness) — plus ``PREFIX.data-SSSSS-of-NNNNN`` shards holding the raw tensor bytes. A
``checkpoint`` text file in the folder names the latest prefix.

The table's blocks are checked against their CRCs; a tensor's bytes against theirs where a
compiled CRC32C is installed (``google-crc32c`` or ``crc32c``; pure Python is too slow for
hundreds of MB), and always against their recorded size and the data file's length. What the
format allows but this reader does not (compressed blocks, partitioned variables stored in
slices, string tensors, big-endian bundles) is a :class:`~sss_rt.errors.ModelError` that says
so, as is anything that is not a checkpoint.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sss_rt.errors import ModelError

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
#: TensorFlow DataType enum → NumPy dtype (the numeric types a checkpoint holds)
DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    17: np.dtype("<u2"),
    19: np.dtype("<f2"),
    22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
_DTYPE_NAMES = {7: "string", 8: "complex64", 14: "bfloat16", 18: "complex128", 20: "resource"}


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: a compiled one where installed, else pure Python."""
    fast = _fast_crc32c()
    if fast is not None:
        return fast(data)
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fast_crc32c():  # type: ignore[no-untyped-def]
    try:
        import google_crc32c

        return lambda data: google_crc32c.value(bytes(data))
    except ImportError:
        pass
    try:
        import crc32c as crc_module

        return crc_module.crc32c
    except ImportError:
        return None


def unmask(masked: int) -> int:
    """LevelDB's CRC masking undone: rot = masked − 0xa282ead8, crc = rot rotated left 15."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a serialized protobuf message: varints as int,
    length-delimited as bytes, fixed32/64 as int."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = bytes(buf[pos : pos + length])
            if len(value) != length:
                raise ValueError("truncated field")
            pos += length
        elif wire == 5:
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


@dataclass(frozen=True)
class Entry:
    """Where one tensor is stored and what it is."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None
    sliced: bool

    @property
    def dtype_name(self) -> str:
        if self.dtype in DTYPES:
            return str(DTYPES[self.dtype].newbyteorder("="))
        return _DTYPE_NAMES.get(self.dtype, f"dtype {self.dtype}")

    @classmethod
    def parse(cls, name: str, value: bytes) -> Entry:
        dtype = shard = offset = size = 0
        crc, shape, sliced = None, [], False
        for number, _, v in _fields(value):
            if number == 1:
                dtype = int(v)  # type: ignore[call-overload]
            elif number == 2:
                for n2, _, dim in _fields(v):  # type: ignore[arg-type]
                    if n2 == 2:
                        shape.append(
                            next((int(s) for n3, _, s in _fields(dim) if n3 == 1), 0)  # type: ignore[arg-type, call-overload]
                        )
                    elif n2 == 3 and v:
                        raise ValueError("a tensor of unknown rank")
            elif number == 3:
                shard = int(v)  # type: ignore[call-overload]
            elif number == 4:
                offset = int(v)  # type: ignore[call-overload]
            elif number == 5:
                size = int(v)  # type: ignore[call-overload]
            elif number == 6:
                crc = int(v)  # type: ignore[call-overload]
            elif number == 7:
                sliced = True
        return cls(name, dtype, tuple(shape), shard, offset, size, crc, sliced)


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Keys and values of one table block (its restart array at the end)."""
    if len(block) < 4:
        raise ValueError("block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError("bad restart count")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise ValueError("bad block entry")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield bytes(key), bytes(block[pos : pos + length])
        pos += length


def resolve_prefix(path: str | os.PathLike[str]) -> Path:
    """The checkpoint prefix for a folder with a ``checkpoint`` file, a prefix, or an
    ``.index`` path. A ``checkpoint`` file's path is taken relative to its folder when it
    does not exist as written (checkpoints are often moved from the machine that wrote them)."""
    p = Path(path)
    if p.is_dir():
        state = p / "checkpoint"
        if not state.is_file():
            indexes = sorted(p.glob("*.index"))
            if len(indexes) == 1:
                return indexes[0].with_suffix("")
            raise ModelError(
                f"{p}: a folder without a 'checkpoint' file"
                + (f" and with {len(indexes)} .index files" if indexes else " or any .index file")
            )
        text = state.read_text(errors="replace")
        match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', text, re.MULTILINE)
        if not match:
            raise ModelError(f"{state}: no model_checkpoint_path in it")
        named = Path(match.group(1))
        for candidate in (named, p / named, p / named.name):
            if Path(str(candidate) + ".index").is_file():
                return candidate
        raise ModelError(f"{state} names {named}, whose .index file is not in {p}")
    if p.suffix == ".index" and p.is_file():
        return p.with_suffix("")
    if Path(str(p) + ".index").is_file():
        return p
    if p.name.startswith(p.stem) and re.search(r"\.data-\d{5}-of-\d{5}$", p.name):
        return resolve_prefix(re.sub(r"\.data-\d{5}-of-\d{5}$", "", str(p)))
    raise ModelError(f"checkpoint not found: {p} (give its folder, its prefix or its .index file)")


class CheckpointReader:
    """The tensors of a TensorFlow V2 checkpoint, read on demand.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint's folder (with a ``checkpoint`` file), its prefix, or its ``.index``.

    Raises
    ------
    sss_rt.errors.ModelError
        Not a readable V2 checkpoint (the message says what is wrong and in which file).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.prefix = resolve_prefix(path)
        index = Path(str(self.prefix) + ".index")
        self._index_path = index
        try:
            self.entries, self.num_shards = self._read_index(index.read_bytes())
        except ValueError as exc:
            raise ModelError(f"{index}: not a TensorFlow V2 checkpoint index ({exc})") from None

    def _read_index(self, data: bytes) -> tuple[dict[str, Entry], int]:
        if len(data) < _FOOTER:
            raise ValueError("shorter than a table footer")
        footer = data[-_FOOTER:]
        (magic,) = struct.unpack_from("<Q", footer, _FOOTER - 8)
        if magic != _MAGIC:
            raise ValueError("no table magic number")
        _, pos = _varint(footer, 0)
        _, pos = _varint(footer, pos)  # the meta-index handle (unused)
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        entries: dict[str, Entry] = {}
        header = None
        for _, handle in _block_entries(self._block(data, index_offset, index_size)):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            for key, value in _block_entries(self._block(data, offset, size)):
                if key == b"":
                    header = dict((n, v) for n, _, v in _fields(value))
                    continue
                if key.startswith(b"\x00"):  # one slice of a partitioned variable
                    continue
                name = key.decode("utf-8", errors="replace")
                entries[name] = Entry.parse(name, value)
        if header is None:
            raise ValueError("no bundle header")
        if int(header.get(2, 0)) != 0:  # type: ignore[call-overload]
            raise ValueError("a big-endian bundle")
        return entries, int(header.get(1, 1))  # type: ignore[call-overload]

    @staticmethod
    def _block(data: bytes, offset: int, size: int) -> bytes:
        if offset + size + 5 > len(data) - _FOOTER:
            raise ValueError("a block handle points past the end of the file")
        block = data[offset : offset + size]
        kind = data[offset + size]
        (masked,) = struct.unpack_from("<I", data, offset + size + 1)
        if unmask(masked) != crc32c(data[offset : offset + size + 1]):
            raise ValueError(f"block at byte {offset} fails its CRC32C check")
        if kind != 0:
            raise ValueError(f"block at byte {offset} is compressed (type {kind}); not supported")
        return block

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape by name."""
        return {name: e.shape for name, e in self.entries.items()}

    def data_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """One tensor as a NumPy array (its stored dtype and shape).

        Raises
        ------
        KeyError
            No tensor of that name.
        sss_rt.errors.ModelError
            The tensor cannot be read: sliced, of a non-numeric dtype, or its bytes are
            missing (a truncated data file) or corrupt.
        """
        entry = self.entries[name]
        if entry.sliced:
            raise ModelError(
                f"{self.prefix}: {name} is stored in slices (a partitioned variable); "
                "sliced entries are not supported"
            )
        if entry.dtype not in DTYPES:
            raise ModelError(f"{self.prefix}: {name} is a {entry.dtype_name} tensor; not supported")
        dtype = DTYPES[entry.dtype]
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise ModelError(f"{self.prefix}: {name}'s recorded size does not match its shape")
        path = self.data_path(entry.shard)
        try:
            with open(path, "rb") as fh:
                fh.seek(entry.offset)
                raw = fh.read(entry.size)
        except OSError as exc:
            raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if len(raw) != entry.size:
            raise ModelError(
                f"{path}: truncated ({name} needs bytes {entry.offset}–"
                f"{entry.offset + entry.size}, the file has {os.path.getsize(path)})"
            )
        checkable = entry.crc is not None and _fast_crc32c() is not None
        if checkable and unmask(entry.crc) != crc32c(raw):  # type: ignore[arg-type]
            raise ModelError(f"{path}: {name}'s bytes fail their CRC32C check (corrupt)")
        return np.frombuffer(raw, dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
