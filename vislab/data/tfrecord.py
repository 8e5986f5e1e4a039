"""TFRecord files of tf.train.Example records, read and written without TensorFlow.

DeepMind's multi-object data sets (CLEVR-with-masks) ship as GZIP-compressed TFRecord files. The
format is small enough to read directly:

- a file is a sequence of records: length (uint64, little-endian), masked CRC-32C of those 8
  bytes (uint32), the record's bytes, masked CRC-32C of the bytes (uint32); GZIP wraps the whole
  sequence in one stream;
- a record is a protocol-buffer `Example`: field 1 `Features`, a map (repeated entries of key = 1,
  value = 2) from a name to a `Feature`, which holds one of `BytesList` (1), `FloatList` (2) or
  `Int64List` (3), each a repeated field 1.

Reading checks each length's CRC (a wrong one means the file is not a TFRecord file, or is cut or
corrupt where it matters most: a wrong length reads garbage) and relies on GZIP's own CRC-32 over
the whole stream for the payload; checking CRC-32C of every payload in pure Python would cost
about 0.3 s per CLEVR scene.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

_CRC32C_TABLE = []
for _byte in range(256):
    _crc = _byte
    for _ in range(8):
        _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1  # Castagnoli, reflected
    _CRC32C_TABLE.append(_crc)


class TFRecordError(ValueError):
    """The bytes are not a well-formed TFRecord file of tf.train.Example records."""


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord stores CRCs rotated right by 15 bits plus a constant (CRCs of CRCs are weak)."""
    crc = crc32c(data)
    return ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF


def _open(path: Path) -> BinaryIO:
    """GZIP-compressed (by its magic bytes) or plain."""
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if compressed else open(path, "rb")


def read_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file, GZIP-compressed or not, in order."""
    try:
        with _open(path) as f:
            while True:
                header = f.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise TFRecordError("the file ends inside a record header (cut short?)")
                (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
                if masked_crc(header[:8]) != crc:
                    raise TFRecordError("a record's length fails its checksum (not a TFRecord file, "
                                        "or a corrupt one)")
                data = f.read(length)
                if len(data) < length or len(f.read(4)) < 4:
                    raise TFRecordError("the file ends inside a record (cut short?)")
                yield data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise TFRecordError(f"cannot decompress: {exc}") from None


def write_records(path: Path, records: list[bytes]) -> None:
    """Write a GZIP-compressed TFRecord file (as TensorFlow writes with compression_type='GZIP')."""
    with gzip.open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", masked_crc(length)) + data +
                    struct.pack("<I", masked_crc(data)))


# ----------------------------------------------------------------------------- protocol buffers

def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise TFRecordError("a varint runs past the end of its message")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: memoryview) -> Iterator[tuple[int, int, memoryview | int]]:
    """(field number, wire type, value) of a message: a memoryview for length-delimited fields,
    an int for varints and fixed-width ones."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise TFRecordError("a field runs past the end of its message")
            value, pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        else:
            raise TFRecordError(f"unsupported protocol-buffer wire type {wire}")
        yield number, wire, value


def _bytes_list(buf: memoryview) -> list[bytes] | np.ndarray:
    """A BytesList's values. CLEVR stores images as one one-byte string per number: those come back
    as one uint8 array, read with numpy instead of a million Python steps."""
    raw = np.frombuffer(buf, np.uint8)
    if len(raw) and len(raw) % 3 == 0:
        triples = raw.reshape(-1, 3)
        if (triples[:, 0] == 0x0A).all() and (triples[:, 1] == 1).all():  # field 1, length 1
            return triples[:, 2].copy()
    return [bytes(v) for number, _, v in _fields(buf) if number == 1]


def _repeated(buf: memoryview, packed, single) -> list:
    """The values of a message's repeated field 1, written packed (one length-delimited run,
    decoded by `packed`) or one by one (each decoded by `single`)."""
    values = []
    for number, wire, value in _fields(buf):
        if number == 1:
            values.extend(packed(value) if wire == 2 else [single(value)])
    return values


def _varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def _float_list(buf: memoryview) -> np.ndarray:
    return np.array(_repeated(buf, lambda run: np.frombuffer(run, "<f4").tolist(),
                              lambda bits: struct.unpack("<f", bits.to_bytes(4, "little"))[0]), np.float32)


def _int64_list(buf: memoryview) -> np.ndarray:
    values = _repeated(buf, _varints, lambda value: value)
    return np.array(values, np.uint64).astype(np.int64)  # two's complement back to signed


READERS = {1: _bytes_list, 2: _float_list, 3: _int64_list}  # Feature's oneof numbers


def parse_example(record: bytes) -> dict[str, list[bytes] | np.ndarray]:
    """A tf.train.Example as {name: values}: a uint8 array (one-byte strings), a list of bytes, a
    float32 array or an int64 array."""
    features = {}
    for number, _, value in _fields(memoryview(record)):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(value):
            if entry_number != 1:
                continue
            fields = {n: v for n, _, v in _fields(entry)}
            name, feature = bytes(fields.get(1, b"")).decode(), fields.get(2, memoryview(b""))
            for kind, _, payload in _fields(feature):
                if kind in READERS:
                    features[name] = READERS[kind](payload)
    return features


def _field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def encode_example(features: dict[str, np.ndarray]) -> bytes:
    """A tf.train.Example from numpy arrays: uint8 arrays become BytesLists of one-byte strings (as
    in DeepMind's files), float arrays packed FloatLists, integer arrays packed Int64Lists."""
    entries = b""
    for name, values in features.items():
        values = np.asarray(values).ravel()
        if values.dtype == np.uint8:
            triples = np.empty((len(values), 3), np.uint8)
            triples[:, 0], triples[:, 1], triples[:, 2] = 0x0A, 1, values
            feature = _field(1, triples.tobytes())
        elif values.dtype.kind == "f":
            feature = _field(2, _field(1, values.astype("<f4").tobytes()))
        else:
            feature = _field(3, _field(1, b"".join(_encode_varint(int(v) & (2**64 - 1)) for v in values)))
        entries += _field(1, _field(1, name.encode()) + _field(2, feature))
    return _field(1, entries)
