"""Segmented streaming AEAD for files: constant memory for any size.

Layout (docs/FORMAT.md): a 63-byte header ("KF", version, alg, dek id, segment size, salt,
nonce prefix), then segments. Every segment but the last holds exactly `segment_size` plaintext
bytes; the last holds 0..segment_size. Each is AES-256-GCM under a per-file subkey
HKDF-SHA256(DEK, salt, "keyshift stream v1"), with nonce = prefix (7) || counter u32 BE || last
flag (1 byte), and associated data = header || caller AD. So:

* reordering or dropping a segment changes its counter      -> authentication fails;
* truncation at a segment boundary leaves a non-last segment at the end (flag 0) -> fails;
  appending data turns the real last segment into a non-last one             -> fails;
* a segment moved from another file meets another subkey (another salt)      -> fails;
* the header (dek id, segment size, salt, prefix) and caller AD are bound into every tag.

A reader learns that a segment is the last one by looking one byte ahead. Plaintext is handed
out one authenticated segment at a time, so a consumer must treat the output as complete only
when the reader reaches the end without an error (truncation is detected at the end).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyshift.crypto.dek import DataKey
from keyshift.crypto.format import (
    AUTH_FAILED,
    MALFORMED,
    MAX_SEGMENTS,
    NONCE_PREFIX_LEN,
    SALT_LEN,
    STREAM_HEADER_LEN,
    TAG_LEN,
    StreamHeader,
    check_segment_size,
    encode_stream_header,
    parse_stream_header,
)
from keyshift.errors import IntegrityError, UsageError

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "DecryptingReader",
    "StreamHeader",
    "ciphertext_size",
    "decrypt_stream",
    "encrypt_stream",
    "iter_encrypt",
    "read_stream_header",
]

DEFAULT_SEGMENT_SIZE = 1 << 20
HKDF_INFO = b"keyshift stream v1"
_COUNTER_FLAG = struct.Struct(">IB")


def _subkey(dek: DataKey, salt: bytes) -> AESGCM:
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=HKDF_INFO).derive(dek.key)
    return AESGCM(material)


def _check_ad(ad: object) -> bytes:
    if not isinstance(ad, bytes | bytearray):
        raise UsageError("stream associated data must be bytes")
    return bytes(ad)


class _Segments:
    """Nonce and AD bookkeeping shared by the sealing and the opening side."""

    def __init__(self, dek: DataKey, header: StreamHeader, ad: bytes) -> None:
        self.aead = _subkey(dek, header.salt)
        self.prefix = header.nonce_prefix
        self.ad = header.raw + ad
        self.counter = 0

    def next_nonce(self, last: bool) -> bytes:
        if self.counter >= MAX_SEGMENTS:
            raise IntegrityError(MALFORMED)
        nonce = self.prefix + _COUNTER_FLAG.pack(self.counter, 1 if last else 0)
        self.counter += 1
        return nonce


def _start(
    dek: DataKey, ad: bytes, segment_size: int, salt: bytes | None, nonce_prefix: bytes | None
) -> tuple[StreamHeader, _Segments]:
    check_segment_size(segment_size)
    header = encode_stream_header(
        dek.id,
        segment_size,
        os.urandom(SALT_LEN) if salt is None else salt,
        os.urandom(NONCE_PREFIX_LEN) if nonce_prefix is None else nonce_prefix,
    )
    return header, _Segments(dek, header, _check_ad(ad))


def _seal(seg: _Segments, data: bytes | bytearray | memoryview, last: bool) -> bytes:
    if seg.counter >= MAX_SEGMENTS:
        raise UsageError("file too large for this segment size")
    return seg.aead.encrypt(seg.next_nonce(last), data, seg.ad)


def iter_encrypt(
    dek: DataKey,
    chunks: Iterable[bytes],
    ad: bytes,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    *,
    _salt: bytes | None = None,
    _nonce_prefix: bytes | None = None,
) -> Iterator[bytes]:
    """Yield the header, then one ciphertext segment at a time. (_salt/_nonce_prefix: vectors only.)"""
    header, seg = _start(dek, ad, segment_size, _salt, _nonce_prefix)
    yield header.raw
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        while len(buf) > segment_size:  # strictly more: a full segment may still be the last
            yield _seal(seg, memoryview(buf)[:segment_size], last=False)
            del buf[:segment_size]
    yield _seal(seg, buf, last=True)


def _fill(src: BinaryIO, buf: bytearray, start: int = 0) -> int:
    """Read into buf[start:] until it is full or src is at EOF; returns the bytes now in buf."""
    view = memoryview(buf)
    have = start
    size = len(buf)
    readinto = getattr(src, "readinto", None)
    while have < size:
        if readinto is not None:
            got = readinto(view[have:])
        else:
            data = src.read(size - have)
            got = len(data) if data else 0
            view[have : have + got] = data if data else b""
        if not got:
            break
        have += got
    return have


def _write_all(dst: BinaryIO, data: memoryview) -> None:
    while data.nbytes:
        written = dst.write(data)
        if written is None or written >= data.nbytes:
            return
        data = data[written:]


def _read_up_to(src: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes of src (fewer only at its end), without a zeroed buffer of `size`."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        chunk = src.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def encrypt_stream(
    dek: DataKey,
    src: BinaryIO,
    dst: BinaryIO,
    ad: bytes,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    *,
    _salt: bytes | None = None,
    _nonce_prefix: bytes | None = None,
) -> int:
    """Encrypt src into dst with about three segments of memory; returns plaintext bytes."""
    header, seg = _start(dek, ad, segment_size, _salt, _nonce_prefix)
    _write_all(dst, memoryview(header.raw))
    first = _read_up_to(src, segment_size)
    if len(first) < segment_size:  # a one-segment stream (most files): no segment buffers
        _write_all(dst, memoryview(seg.aead.encrypt(seg.next_nonce(True), first, seg.ad)))
        return len(first)
    cur, nxt = bytearray(first), bytearray(segment_size)
    del first
    out = bytearray(segment_size + TAG_LEN)
    out_view = memoryview(out)
    n = segment_size
    total = n
    while True:
        if n < segment_size:
            last, m = True, 0
        else:
            m = _fill(src, nxt)
            last = m == 0
        if seg.counter >= MAX_SEGMENTS:
            raise UsageError("file too large for this segment size")
        k = seg.aead.encrypt_into(seg.next_nonce(last), memoryview(cur)[:n], seg.ad, out_view[: n + TAG_LEN])
        _write_all(dst, out_view[:k])
        if last:
            return total
        cur, nxt = nxt, cur
        n = m
        total += m


def read_stream_header(src: BinaryIO) -> StreamHeader:
    """Read and check the stream header (which DEK, which segment size). IntegrityError if bad."""
    buf = bytearray(STREAM_HEADER_LEN)
    if _fill(src, buf) != STREAM_HEADER_LEN:
        raise IntegrityError(MALFORMED)
    return parse_stream_header(buf)


class DecryptingReader(io.RawIOBase):
    """A readable file object over an encrypted stream; authenticates segment by segment.

    Raises IntegrityError on tampering, reordering, swapping or truncation (truncation at the
    end, when the missing last segment would have been read). Once failed it stays failed.
    """

    def __init__(self, src: BinaryIO, key_for: Callable[[bytes], DataKey], ad: bytes) -> None:
        super().__init__()
        self._src = src
        self._ad = _check_ad(ad)
        self.header = read_stream_header(src)
        dek = key_for(self.header.dek_id)
        if not isinstance(dek, DataKey) or dek.id != self.header.dek_id:
            raise IntegrityError("unknown data key")
        self._seg = _Segments(dek, self.header, self._ad)
        size = self.header.segment_size
        self._ct = bytearray(size + TAG_LEN + 1)  # one segment plus one byte of look-ahead
        self._carry = 0  # look-ahead bytes already at the start of _ct
        self._pt = bytearray()
        self._pt_len = 0
        self._pt_pos = 0
        self._done = False
        self._failed = False

    @property
    def dek_id(self) -> bytes:
        return self.header.dek_id

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._failed:
            raise IntegrityError(AUTH_FAILED)
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(b).cast("B")
        while self._pt_pos >= self._pt_len:
            if self._done:
                return 0
            # A caller buffer that holds a whole segment gets it decrypted in place (no copy).
            direct = out.nbytes >= self.header.segment_size
            try:
                n = self._next_segment(out if direct else None)
            except IntegrityError:
                self._failed = True
                self._pt_len = self._pt_pos = 0
                raise
            if direct:
                if n:
                    return n
                continue
        n = min(out.nbytes, self._pt_len - self._pt_pos)
        out[:n] = memoryview(self._pt)[self._pt_pos : self._pt_pos + n]
        self._pt_pos += n
        return n

    def _next_segment(self, target: memoryview | None) -> int:
        """Read, authenticate and decrypt one segment into target (or the internal buffer)."""
        size = self.header.segment_size
        full = size + TAG_LEN
        got = _fill(self._src, self._ct, self._carry)
        if got == full + 1:
            last, clen = False, full
        else:
            last, clen = True, got
        if clen < TAG_LEN:
            raise IntegrityError(MALFORMED)
        nonce = self._seg.next_nonce(last)
        ct_view = memoryview(self._ct)
        if target is None and len(self._pt) < size:
            self._pt = bytearray(size)  # only readers with small buffers need this one
        into = (target if target is not None else memoryview(self._pt))[: clen - TAG_LEN]
        try:
            n = self._seg.aead.decrypt_into(nonce, ct_view[:clen], self._seg.ad, into)
        except InvalidTag:
            into[:] = bytes(into.nbytes)  # never leave unauthenticated plaintext behind
            raise IntegrityError(AUTH_FAILED) from None
        self._pt_pos = 0
        self._pt_len = 0 if target is not None else n
        if last:
            self._done = True
            self._carry = 0
        else:
            self._ct[0] = self._ct[full]
            self._carry = 1
        return n

    def close(self) -> None:
        if not self.closed:
            self._pt_len = self._pt_pos = 0
            self._pt = bytearray()
            self._ct = bytearray()
        super().close()


def decrypt_stream(src: BinaryIO, dst: BinaryIO, key_for: Callable[[bytes], DataKey], ad: bytes) -> int:
    """Decrypt src into dst; returns plaintext bytes. dst is complete only if no error is raised."""
    reader = DecryptingReader(src, key_for, ad)
    buf = bytearray(reader.header.segment_size)
    view = memoryview(buf)
    total = 0
    try:
        while True:
            n = reader.readinto(view)
            if not n:
                return total
            _write_all(dst, view[:n])
            total += n
    finally:
        reader.close()


def ciphertext_size(plaintext_size: int, segment_size: int) -> int:
    """Exact size of the encrypted stream for a plaintext of this size."""
    check_segment_size(segment_size)
    if plaintext_size < 0:
        raise UsageError("plaintext size must be >= 0")
    segments = max(1, -(-plaintext_size // segment_size))
    if segments > MAX_SEGMENTS:
        raise UsageError("file too large for this segment size")
    return STREAM_HEADER_LEN + plaintext_size + segments * TAG_LEN
