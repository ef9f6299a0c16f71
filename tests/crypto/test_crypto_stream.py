"""Streaming AEAD: round trips, every kind of tampering, fuzzing, constant memory."""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyshift.crypto.dek import DataKey, generate_dek
from keyshift.crypto.format import STREAM_HEADER_LEN, TAG_LEN
from keyshift.crypto.stream import (
    DecryptingReader,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    iter_encrypt,
    read_stream_header,
)
from keyshift.errors import IntegrityError, UsageError

SEG = 4096
AD = b"\x00\x00\x00\x01t\x00\x00\x00\x01e\x00\x00\x00\x05files\x00\x00\x00\x07img/a.png"
KEY = generate_dek()


def key_for(dek_id: bytes) -> DataKey:
    if dek_id != KEY.id:
        raise IntegrityError("unknown data key")
    return KEY


def enc(plaintext: bytes, seg: int = SEG, ad: bytes = AD, key: DataKey = KEY) -> bytes:
    out = io.BytesIO()
    assert encrypt_stream(key, io.BytesIO(plaintext), out, ad, seg) == len(plaintext)
    return out.getvalue()


def dec(blob: bytes, ad: bytes = AD) -> bytes:
    out = io.BytesIO()
    n = decrypt_stream(io.BytesIO(blob), out, key_for, ad)
    assert n == len(out.getvalue())
    return out.getvalue()


def segments(blob: bytes, seg: int = SEG) -> list[bytes]:
    body = blob[STREAM_HEADER_LEN:]
    step = seg + TAG_LEN
    return [body[i : i + step] for i in range(0, len(body), step)]


def assert_fails(blob: bytes, ad: bytes = AD) -> IntegrityError:
    with pytest.raises(IntegrityError) as info:
        dec(blob, ad)
    exc = info.value
    assert exc.message in {"ciphertext is malformed", "failed authentication", "unknown data key"}
    assert KEY.key.hex() not in str(exc) and repr(KEY.key) not in repr(exc)
    return exc


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17])
def test_round_trip_and_exact_size(size: int) -> None:
    plaintext = os.urandom(size)
    blob = enc(plaintext)
    assert len(blob) == ciphertext_size(size, SEG)
    assert dec(blob) == plaintext
    header = read_stream_header(io.BytesIO(blob))
    assert header.dek_id == KEY.id and header.segment_size == SEG
    assert len(segments(blob)) == max(1, -(-size // SEG))


def test_iter_encrypt_matches_layout_and_decrypts() -> None:
    plaintext = os.urandom(3 * SEG + 5)
    chunks = [plaintext[i : i + 777] for i in range(0, len(plaintext), 777)]
    parts = list(iter_encrypt(KEY, chunks, AD, SEG))
    assert len(parts[0]) == STREAM_HEADER_LEN
    assert [len(p) for p in parts[1:]] == [SEG + 16] * 3 + [5 + 16]
    assert dec(b"".join(parts)) == plaintext
    assert dec(b"".join(iter_encrypt(KEY, [], AD, SEG))) == b""


def test_reader_small_reads_and_readall() -> None:
    plaintext = os.urandom(2 * SEG + 100)
    blob = enc(plaintext)
    reader = DecryptingReader(io.BytesIO(blob), key_for, AD)
    got = bytearray()
    while chunk := reader.read(1000):
        got += chunk
    assert bytes(got) == plaintext
    assert reader.read(10) == b""
    assert DecryptingReader(io.BytesIO(blob), key_for, AD).read() == plaintext
    buffered = io.BufferedReader(DecryptingReader(io.BytesIO(blob), key_for, AD))
    assert buffered.read() == plaintext


def test_source_without_readinto_and_short_reads() -> None:
    class Trickle:
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self.data.read(min(n, 333) if n >= 0 else 333)

    plaintext = os.urandom(2 * SEG + 1)
    out = io.BytesIO()
    encrypt_stream(KEY, Trickle(plaintext), out, AD, SEG)  # type: ignore[arg-type]
    back = io.BytesIO()
    decrypt_stream(Trickle(out.getvalue()), back, key_for, AD)  # type: ignore[arg-type]
    assert back.getvalue() == plaintext


def test_truncation_at_segment_boundary() -> None:
    blob = enc(os.urandom(3 * SEG))
    segs = segments(blob)
    for keep in range(len(segs)):
        assert_fails(blob[:STREAM_HEADER_LEN] + b"".join(segs[:keep]))


def test_truncation_mid_segment_and_in_header() -> None:
    blob = enc(os.urandom(2 * SEG + 10))
    for cut in [1, 30, STREAM_HEADER_LEN - 1, STREAM_HEADER_LEN + 1, STREAM_HEADER_LEN + 15]:
        assert_fails(blob[:cut])
    for cut in range(STREAM_HEADER_LEN + SEG, len(blob), 97):
        assert_fails(blob[:cut])
    assert_fails(blob[:-1])


def test_appended_data_fails() -> None:
    blob = enc(os.urandom(SEG + 10))
    assert_fails(blob + b"\x00")
    assert_fails(blob + segments(blob)[-1])


def test_reordered_segments_fail() -> None:
    blob = enc(os.urandom(3 * SEG + 1))
    s = segments(blob)
    header = blob[:STREAM_HEADER_LEN]
    assert_fails(header + s[1] + s[0] + s[2] + s[3])
    assert_fails(header + s[0] + s[2] + s[1] + s[3])
    assert_fails(header + s[0] + s[1] + s[2] + s[2] + s[3])  # duplicated
    assert_fails(header + s[0] + s[2] + s[3])  # dropped


def test_segment_swap_between_files_fails() -> None:
    plaintext = os.urandom(2 * SEG + 1)
    a, b = enc(plaintext), enc(plaintext)  # same key, same AD, same plaintext
    sa, sb = segments(a), segments(b)
    assert sa[0] != sb[0]
    assert_fails(a[:STREAM_HEADER_LEN] + sb[0] + sa[1] + sa[2])
    assert_fails(b[:STREAM_HEADER_LEN] + b"".join(sa))


def test_wrong_associated_data_fails() -> None:
    blob = enc(b"hello")
    assert_fails(blob, AD + b"x")
    assert_fails(blob, b"")


def test_flipped_byte_at_every_position_fails() -> None:
    # Small segments would be refused (>= 4 KiB), so flip every header byte and a spread of body bytes.
    blob = enc(os.urandom(SEG + 50))
    positions = (
        list(range(STREAM_HEADER_LEN)) + list(range(STREAM_HEADER_LEN, len(blob), 7)) + [len(blob) - 1]
    )
    for pos in positions:
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        assert_fails(bytes(bad))


def test_unknown_key_and_wrong_key_from_callback() -> None:
    other = generate_dek()
    blob = enc(b"hello", key=other)
    assert assert_fails(blob).message == "unknown data key"
    with pytest.raises(IntegrityError, match="unknown data key"):
        DecryptingReader(io.BytesIO(enc(b"x")), lambda _id: other, AD)


def test_reader_stays_failed() -> None:
    blob = bytearray(enc(os.urandom(2 * SEG + 10)))
    blob[-1] ^= 1
    reader = DecryptingReader(io.BytesIO(bytes(blob)), key_for, AD)
    assert len(reader.read(SEG)) == SEG  # the first two segments authenticate
    assert len(reader.read(SEG)) == SEG
    with pytest.raises(IntegrityError):
        reader.read(SEG)
    with pytest.raises(IntegrityError):
        reader.read(1)


def test_encrypt_bounds() -> None:
    for seg in (4095, (16 << 20) + 1):
        with pytest.raises(UsageError):
            enc(b"x", seg=seg)
        with pytest.raises(UsageError):
            ciphertext_size(10, seg)
    with pytest.raises(UsageError):
        ciphertext_size(-1, SEG)
    with pytest.raises(UsageError):
        encrypt_stream(KEY, io.BytesIO(b""), io.BytesIO(), "not bytes", SEG)  # type: ignore[arg-type]
    assert ciphertext_size(0, SEG) == STREAM_HEADER_LEN + 16


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_reader_on_random_bytes(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        dec(data)
    with pytest.raises(IntegrityError):
        dec(enc(b"")[:STREAM_HEADER_LEN] + data)


VALID = enc(os.urandom(2 * SEG + 33))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=4,
        unique_by=lambda flip: flip[0],  # two flips of one byte could cancel out
    ),
    st.integers(0, len(VALID)),
)
def test_fuzz_reader_on_mutated_streams(flips: list[tuple[int, int]], cut: int) -> None:
    bad = bytearray(VALID)
    for pos, mask in flips:
        bad[pos] ^= mask
    with pytest.raises(IntegrityError):
        dec(bytes(bad))
    if cut < len(VALID):
        with pytest.raises(IntegrityError):
            dec(VALID[:cut])


class Zeros(io.RawIOBase):
    """A readable source of n zero bytes that allocates nothing per read."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        memoryview(b)[:n] = bytes(n) if n < 4096 else memoryview(bytearray(n))
        self.left -= n
        return n


class Sink(io.RawIOBase):
    """Counts bytes written and keeps only a running digest, so memory stays flat."""

    def __init__(self) -> None:
        import hashlib

        self.size = 0
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = memoryview(b).nbytes
        self.digest.update(b)
        self.size += n
        return n


def _pipe(blob_chunks: Iterator[bytes]) -> io.RawIOBase:
    class Src(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = b""

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
            while not self.buf:
                self.buf = next(blob_chunks, b"")
                if not self.buf:
                    return 0
            n = min(len(b), len(self.buf))
            memoryview(b)[:n] = self.buf[:n]
            self.buf = self.buf[n:]
            return n

    return Src()


def test_large_stream_runs_in_constant_memory() -> None:
    seg = 64 << 10
    size = 48 << 20  # 768 segments
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        sink = Sink()
        encrypt_stream(KEY, Zeros(size), sink, AD, seg)  # type: ignore[arg-type]
        _, enc_peak = tracemalloc.get_traced_memory()
        assert sink.size == ciphertext_size(size, seg)

        tracemalloc.reset_peak()
        chunks = iter_encrypt(KEY, (bytes(seg // 2) for _ in range(2 * size // seg)), AD, seg)
        out = Sink()
        assert decrypt_stream(_pipe(chunks), out, key_for, AD) == size  # type: ignore[arg-type]
        _, dec_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"peak bytes: encrypt {enc_peak}, decrypt {dec_peak}, segment {seg}")
    assert enc_peak < 6 * seg, enc_peak
    assert dec_peak < 8 * seg, dec_peak
    import hashlib

    expected = hashlib.sha256()
    for _ in range(size // seg):
        expected.update(bytes(seg))
    assert out.digest.hexdigest() == expected.hexdigest()


def test_failed_segment_leaves_no_plaintext_in_the_callers_buffer() -> None:
    plaintext = b"P" * (2 * SEG)
    blob = bytearray(enc(plaintext))
    blob[STREAM_HEADER_LEN + SEG + TAG_LEN - 1] ^= 1  # the first segment's tag
    reader = DecryptingReader(io.BytesIO(bytes(blob)), key_for, AD)
    buf = bytearray(b"\xaa" * (2 * SEG))
    with pytest.raises(IntegrityError):
        reader.readinto(buf)
    assert bytes(buf[:SEG]) == bytes(SEG)
    assert b"P" not in buf


def test_direct_and_buffered_reads_agree() -> None:
    plaintext = os.urandom(3 * SEG + 123)
    blob = enc(plaintext)
    reader = DecryptingReader(io.BytesIO(blob), key_for, AD)
    got = bytearray()
    sizes = [SEG, 100, SEG * 2, 7, SEG]
    i = 0
    while True:
        buf = bytearray(sizes[i % len(sizes)])
        i += 1
        n = reader.readinto(buf)
        if not n:
            break
        got += buf[:n]
    assert bytes(got) == plaintext
