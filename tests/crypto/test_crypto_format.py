"""Header codecs: exact layout, caps, and fuzzing (nothing but IntegrityError ever escapes)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyshift.crypto.format import (
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    RECORD_HEADER_LEN,
    STREAM_HEADER_LEN,
    encode_record_header,
    encode_stream_header,
    parse_record_header,
    parse_stream_header,
)
from keyshift.errors import IntegrityError, UsageError

DEK_ID = bytes(range(16))
NONCE = bytes(range(100, 112))


def test_record_header_layout() -> None:
    header = encode_record_header(DEK_ID, NONCE)
    assert header == b"KS\x01\x01" + DEK_ID + NONCE
    assert len(header) == RECORD_HEADER_LEN == 32
    parsed = parse_record_header(header + bytes(16))
    assert parsed.dek_id == DEK_ID and parsed.nonce == NONCE


def test_stream_header_layout() -> None:
    salt, prefix = bytes(range(32)), bytes(range(7))
    header = encode_stream_header(DEK_ID, 1 << 20, salt, prefix)
    assert header.raw == b"KF\x01\x01" + DEK_ID + struct.pack(">I", 1 << 20) + salt + prefix
    assert len(header.raw) == STREAM_HEADER_LEN == 63
    assert parse_stream_header(header.raw) == header


@pytest.mark.parametrize("size", [0, MIN_SEGMENT_SIZE - 1, MAX_SEGMENT_SIZE + 1, 1 << 31, True])
def test_stream_segment_size_bounds_on_encode(size: int) -> None:
    with pytest.raises(UsageError):
        encode_stream_header(DEK_ID, size, bytes(32), bytes(7))


@pytest.mark.parametrize("size", [0, 1, MIN_SEGMENT_SIZE - 1, MAX_SEGMENT_SIZE + 1, 0xFFFFFFFF])
def test_stream_segment_size_bounds_on_parse(size: int) -> None:
    raw = b"KF\x01\x01" + DEK_ID + struct.pack(">I", size) + bytes(39)
    with pytest.raises(IntegrityError, match="malformed"):
        parse_stream_header(raw)


def test_stream_header_bounds_accept_the_extremes() -> None:
    for size in (MIN_SEGMENT_SIZE, MAX_SEGMENT_SIZE):
        raw = b"KF\x01\x01" + DEK_ID + struct.pack(">I", size) + bytes(39)
        assert parse_stream_header(raw).segment_size == size


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"KF\x01\x01",
        b"KF\x02\x01" + DEK_ID + struct.pack(">I", 4096) + bytes(39),
        b"KF\x01\x02" + DEK_ID + struct.pack(">I", 4096) + bytes(39),
        b"KS\x01\x01" + DEK_ID + struct.pack(">I", 4096) + bytes(39),
        b"KF\x01\x01" + DEK_ID + struct.pack(">I", 4096) + bytes(40),
    ],
)
def test_bad_stream_headers(raw: bytes) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        parse_stream_header(raw)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_record_header_parser(data: bytes) -> None:
    try:
        header = parse_record_header(data)
    except IntegrityError as exc:
        assert exc.message == "ciphertext is malformed"
    else:
        assert data[:4] == b"KS\x01\x01" and len(data) >= 48
        assert header.dek_id == data[4:20] and header.nonce == data[20:32]


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(min_size=60, max_size=66),
        st.binary(min_size=59, max_size=59).map(lambda tail: b"KF\x01\x01" + tail),
    )
)
def test_fuzz_stream_header_parser(data: bytes) -> None:
    try:
        header = parse_stream_header(data)
    except IntegrityError as exc:
        assert exc.message == "ciphertext is malformed"
    else:
        assert len(data) == 63 and data[:4] == b"KF\x01\x01"
        assert MIN_SEGMENT_SIZE <= header.segment_size <= MAX_SEGMENT_SIZE
