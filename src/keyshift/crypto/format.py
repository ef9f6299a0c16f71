"""Byte layouts of Keyshift ciphertexts: the record header and the file-stream header.

Both are fixed-length, versioned and parsed defensively: every length is checked against a hard
cap *before* anything is read or sliced, and every structural problem raises one opaque
`IntegrityError` ("ciphertext is malformed"). Nothing here touches keys; see docs/FORMAT.md for
the layout byte by byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from keyshift.errors import IntegrityError, UsageError

MALFORMED = "ciphertext is malformed"
AUTH_FAILED = "failed authentication"

DEK_ID_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16

# ---------------------------------------------------------------------------------------------
# Record header: magic "KS" | version 0x01 | alg 0x01 | dek id (16) | nonce (12)  = 32 bytes,
# followed by the AES-256-GCM ciphertext and its 16-byte tag.
# ---------------------------------------------------------------------------------------------
RECORD_MAGIC = b"KS"
RECORD_VERSION = 1
ALG_AES256_GCM = 1
RECORD_PREFIX_LEN = 2 + 1 + 1 + DEK_ID_LEN  # the part fixed per DEK
RECORD_HEADER_LEN = RECORD_PREFIX_LEN + NONCE_LEN
RECORD_OVERHEAD = RECORD_HEADER_LEN + TAG_LEN
MAX_RECORD_PLAINTEXT = 1 << 28  # 256 MiB: a hard cap, far above any row or SQL-stored file
MAX_RECORD_BLOB = MAX_RECORD_PLAINTEXT + RECORD_OVERHEAD

RECORD_LEAD = RECORD_MAGIC + bytes([RECORD_VERSION, ALG_AES256_GCM])


def record_prefix(dek_id: bytes) -> bytes:
    """The first 20 header bytes, fixed for one DEK (magic, version, alg, dek id)."""
    if len(dek_id) != DEK_ID_LEN:
        raise ValueError("a data key id is 16 bytes")
    return RECORD_LEAD + bytes(dek_id)


def encode_record_header(dek_id: bytes, nonce: bytes) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise ValueError("a record nonce is 12 bytes")
    return record_prefix(dek_id) + bytes(nonce)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    dek_id: bytes
    nonce: bytes


def check_record_blob(blob: object) -> memoryview:
    """Structural checks of a whole record blob; returns a memoryview over it. No slicing first."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise IntegrityError(MALFORMED)
    view = memoryview(blob)
    if view.ndim != 1 or view.itemsize != 1:
        raise IntegrityError(MALFORMED)
    size = view.nbytes
    if size < RECORD_OVERHEAD or size > MAX_RECORD_BLOB:
        raise IntegrityError(MALFORMED)
    if view[:4] != RECORD_LEAD:
        raise IntegrityError(MALFORMED)
    return view


def parse_record_header(blob: object) -> RecordHeader:
    """Parse and validate the header of a record blob (the blob's total size is cap-checked too)."""
    view = check_record_blob(blob)
    return RecordHeader(
        dek_id=bytes(view[4:RECORD_PREFIX_LEN]),
        nonce=bytes(view[RECORD_PREFIX_LEN:RECORD_HEADER_LEN]),
    )


# ---------------------------------------------------------------------------------------------
# Stream header: magic "KF" | version 0x01 | alg 0x01 | dek id (16) | segment size u32 BE |
# salt (32) | nonce prefix (7)  = 63 bytes, followed by the segments.
# ---------------------------------------------------------------------------------------------
STREAM_MAGIC = b"KF"
STREAM_VERSION = 1
ALG_AES256_GCM_HKDF_SHA256 = 1
SALT_LEN = 32
NONCE_PREFIX_LEN = 7
STREAM_HEADER_LEN = 2 + 1 + 1 + DEK_ID_LEN + 4 + SALT_LEN + NONCE_PREFIX_LEN
MIN_SEGMENT_SIZE = 4 << 10
MAX_SEGMENT_SIZE = 16 << 20
MAX_SEGMENTS = 1 << 32  # the segment counter is a 32-bit field of the nonce

_STREAM_LEAD = STREAM_MAGIC + bytes([STREAM_VERSION, ALG_AES256_GCM_HKDF_SHA256])
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class StreamHeader:
    dek_id: bytes
    segment_size: int
    salt: bytes
    nonce_prefix: bytes
    raw: bytes  # the 63 encoded bytes (bound into every segment's associated data)


def check_segment_size(segment_size: int) -> int:
    if (
        not isinstance(segment_size, int)
        or isinstance(segment_size, bool)
        or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE
    ):
        raise UsageError(f"segment size must be between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE} bytes")
    return segment_size


def encode_stream_header(dek_id: bytes, segment_size: int, salt: bytes, nonce_prefix: bytes) -> StreamHeader:
    check_segment_size(segment_size)
    if len(dek_id) != DEK_ID_LEN or len(salt) != SALT_LEN or len(nonce_prefix) != NONCE_PREFIX_LEN:
        raise ValueError("bad stream header field length")
    raw = _STREAM_LEAD + bytes(dek_id) + _U32.pack(segment_size) + bytes(salt) + bytes(nonce_prefix)
    return StreamHeader(bytes(dek_id), segment_size, bytes(salt), bytes(nonce_prefix), raw)


def parse_stream_header(data: object) -> StreamHeader:
    """Parse exactly STREAM_HEADER_LEN bytes; anything else is malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise IntegrityError(MALFORMED)
    raw = bytes(data) if len(data) == STREAM_HEADER_LEN else b""
    if len(raw) != STREAM_HEADER_LEN or raw[:4] != _STREAM_LEAD:
        raise IntegrityError(MALFORMED)
    (segment_size,) = _U32.unpack_from(raw, 20)
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise IntegrityError(MALFORMED)
    return StreamHeader(
        dek_id=raw[4:20],
        segment_size=segment_size,
        salt=raw[24 : 24 + SALT_LEN],
        nonce_prefix=raw[24 + SALT_LEN :],
        raw=raw,
    )
