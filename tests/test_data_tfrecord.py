"""TFRecord reading and writing without TensorFlow: checksums, protocol-buffer features, and the
errors for files that are cut short or are not TFRecord files."""
import gzip
import struct

import numpy as np
import pytest

from vislab.data import tfrecord


def test_crc32c_matches_the_standard_check_value():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # CRC-32C's published check value
    assert tfrecord.crc32c(b"") == 0


def test_example_round_trip_keeps_every_kind_of_feature():
    features = {"image": np.arange(300, dtype=np.int64).astype(np.uint8),
                "x": np.array([1.5, -2.25, 0.0], np.float32),
                "count": np.array([3, -1, 2**40])}
    parsed = tfrecord.parse_example(tfrecord.encode_example(features))
    assert parsed["image"].dtype == np.uint8 and np.array_equal(parsed["image"], features["image"])
    assert parsed["x"].dtype == np.float32 and np.array_equal(parsed["x"], features["x"])
    assert parsed["count"].dtype == np.int64 and np.array_equal(parsed["count"], features["count"])


def test_longer_byte_strings_come_back_as_bytes():
    # a BytesList of ordinary strings, written by hand: field 1 of length 5, twice
    bytes_list = b"\x0a\x05hello\x0a\x05world"
    feature = tfrecord._field(1, bytes_list)
    entry = tfrecord._field(1, b"words") + tfrecord._field(2, feature)
    record = tfrecord._field(1, tfrecord._field(1, entry))
    assert tfrecord.parse_example(record) == {"words": [b"hello", b"world"]}


@pytest.mark.parametrize("compress", [True, False])
def test_records_round_trip_compressed_or_not(tmp_path, compress):
    records = [b"first", b"", b"x" * 1000]
    path = tmp_path / "a.tfrecords"
    tfrecord.write_records(path, records)
    if not compress:
        path.write_bytes(gzip.decompress(path.read_bytes()))
    assert list(tfrecord.read_records(path)) == records


def test_each_record_carries_its_length_and_both_checksums(tmp_path):
    path = tmp_path / "a.tfrecords"
    tfrecord.write_records(path, [b"abc"])
    raw = gzip.decompress(path.read_bytes())
    assert raw[:8] == struct.pack("<Q", 3) and raw[12:15] == b"abc"
    assert struct.unpack("<I", raw[8:12])[0] == tfrecord.masked_crc(raw[:8])
    assert struct.unpack("<I", raw[15:19])[0] == tfrecord.masked_crc(b"abc")


def test_a_file_cut_short_is_an_error(tmp_path):
    path = tmp_path / "a.tfrecords"
    tfrecord.write_records(path, [b"x" * 100])
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(raw[:50])
    with pytest.raises(tfrecord.TFRecordError, match="cut short"):
        list(tfrecord.read_records(path))
    path.write_bytes(gzip.compress(raw)[:-10])  # a truncated GZIP stream
    with pytest.raises(tfrecord.TFRecordError, match="decompress"):
        list(tfrecord.read_records(path))


def test_a_file_that_is_not_a_tfrecord_is_an_error(tmp_path):
    path = tmp_path / "a.tfrecords"
    path.write_bytes(b"this is a text file, not records" * 4)
    with pytest.raises(tfrecord.TFRecordError, match="checksum"):
        list(tfrecord.read_records(path))


def test_a_malformed_example_is_an_error():
    with pytest.raises(tfrecord.TFRecordError):
        tfrecord.parse_example(b"\x0a\x50short")  # declares 80 bytes, has 5


def test_unpacked_numbers_are_read_too():
    # writers may store repeated numbers one by one instead of packed: floats as fixed32 (wire
    # type 5, key 0x0D), integers as varints (wire type 0, key 0x08)
    floats = b"".join(b"\x0d" + struct.pack("<f", v) for v in (0.5, -3.0))
    ints = b"\x08\x07\x08\xac\x02"  # 7, 300
    entries = b"".join(tfrecord._field(1, tfrecord._field(1, name) + tfrecord._field(2, tfrecord._field(kind, body)))
                       for name, kind, body in ((b"f", 2, floats), (b"i", 3, ints)))
    parsed = tfrecord.parse_example(tfrecord._field(1, entries))
    assert parsed["f"].tolist() == [0.5, -3.0] and parsed["i"].tolist() == [7, 300]
