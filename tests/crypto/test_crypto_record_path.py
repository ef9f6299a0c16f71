"""The record store's per-record path (`encrypt_record` / `decrypt_record` with an `AdPrefix`) is
byte for byte the general one, refuses what it refuses, and draws nonces that never repeat —
across threads and across a fork."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyshift.crypto import nonces
from keyshift.crypto.dek import Keyring, generate_dek
from keyshift.crypto.format import RECORD_HEADER_LEN
from keyshift.crypto.records import MAX_AD_FIELD_BYTES, AdPrefix, AssociatedData, RecordCipher
from keyshift.errors import IntegrityError, UsageError

LOCATION = ("tenant-1", "env-1", "records", "accounts")


@settings(max_examples=200, deadline=None)
@given(rid=st.text(max_size=40), plain=st.binary(max_size=300))
def test_the_record_path_matches_associated_data_both_ways(rid: str, plain: bytes) -> None:
    try:
        ad = AssociatedData(*LOCATION, rid)
    except UsageError:
        return  # surrogates: refused alike below
    prefix = AdPrefix(*LOCATION)
    assert prefix.for_record(rid) == ad.encode()
    cipher = RecordCipher(Keyring(generate_dek()))
    assert cipher.decrypt(cipher.encrypt_record(plain, prefix, rid), ad) == plain
    assert cipher.decrypt_record(cipher.encrypt(plain, ad), prefix, rid) == plain


def test_the_record_path_refuses_another_location_a_tampered_blob_and_bad_ids() -> None:
    cipher = RecordCipher(Keyring(generate_dek()))
    prefix = AdPrefix(*LOCATION)
    blob = cipher.encrypt_record(b"secret", prefix, "a1")
    for other_prefix, other_id in (
        (prefix, "a2"),
        (AdPrefix("tenant-1", "env-1", "records", "other"), "a1"),
        (AdPrefix("tenant-2", "env-1", "records", "accounts"), "a1"),
    ):
        with pytest.raises(IntegrityError, match="failed authentication"):
            cipher.decrypt_record(blob, other_prefix, other_id)
    for i in (0, 5, RECORD_HEADER_LEN - 1, RECORD_HEADER_LEN, len(blob) - 1):
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(IntegrityError):
            cipher.decrypt_record(bytes(bad), prefix, "a1")
    with pytest.raises(IntegrityError, match="malformed"):
        cipher.decrypt_record(blob[:20], prefix, "a1")
    foreign = RecordCipher(Keyring(generate_dek())).encrypt_record(b"x", prefix, "a1")
    with pytest.raises(IntegrityError, match=r"unknown data key|malformed"):  # another key's blob
        cipher.decrypt_record(foreign, prefix, "a1")
    for bad_id in (b"a1", 7, None, "\ud800", "x" * (MAX_AD_FIELD_BYTES + 1)):
        with pytest.raises(UsageError):
            cipher.encrypt_record(b"x", prefix, bad_id)  # type: ignore[arg-type]
        with pytest.raises(UsageError):
            cipher.decrypt_record(blob, prefix, bad_id)  # type: ignore[arg-type]


def test_the_first_try_under_the_primary_falls_back_to_the_checked_path() -> None:
    """`decrypt_record` tries the primary DEK before reading the header; a blob under another DEK
    of the keyring, a buffer that is not `bytes`, a record past the copy limit and an id size not
    seen yet still decrypt (on the checked path), and a str subclass id is refused as before."""
    old, new = generate_dek(), generate_dek()
    prefix = AdPrefix(*LOCATION)
    under_old = RecordCipher(Keyring(old)).encrypt_record(b"old", prefix, "a1")
    cipher = RecordCipher(Keyring(new, [old]))
    assert cipher.decrypt_record(under_old, prefix, "a1") == b"old"
    blob = cipher.encrypt_record(b"new", prefix, "a1")
    assert cipher.decrypt_record(bytearray(blob), prefix, "a1") == b"new"
    assert cipher.decrypt_record(memoryview(blob), prefix, "a1") == b"new"
    big = os.urandom(200_000)
    assert cipher.decrypt_record(cipher.encrypt_record(big, prefix, "a1"), prefix, "a1") == big
    fresh = AdPrefix(*LOCATION)  # no id size cached yet
    sized = cipher.encrypt_record(b"v", prefix, "id-of-new-size")
    assert cipher.decrypt_record(sized, fresh, "id-of-new-size") == b"v"

    class Id(str):
        pass

    with pytest.raises(UsageError):
        cipher.decrypt_record(blob, prefix, Id("a1"))
    with pytest.raises(IntegrityError, match="failed authentication"):  # the other key, wrong id
        cipher.decrypt_record(under_old, prefix, "a2")


def test_a_record_takes_one_fresh_nonce_from_the_pool() -> None:
    cipher = RecordCipher(Keyring(generate_dek()))
    prefix = AdPrefix(*LOCATION)
    seen = {cipher.encrypt_record(b"same", prefix, "a1")[20:32] for _ in range(5000)}
    assert len(seen) == 5000


def test_nonces_are_distinct_across_threads_and_refills() -> None:
    pool = nonces.NoncePool(block=64)
    out: list[list[bytes]] = [[] for _ in range(8)]

    def draw(i: int) -> None:
        take = pool.take
        out[i].extend(take() for _ in range(20_000))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [n for part in out for n in part]
    assert len(every) == 160_000 and all(len(n) == 12 for n in every)
    assert len(set(every)) == len(every)
    assert pool.refills >= 160_000 // 64


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_draws_the_parents_buffered_nonces() -> None:
    nonces.take()  # the pool holds a block now
    parent_next = [nonces.take() for _ in range(100)]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the nonces it draws, then leave without cleanup
        try:
            os.write(write, b"".join(nonces.take() for _ in range(200)))
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child = {data[i : i + 12] for i in range(0, len(data), 12)}
    assert len(child) == 200
    parent_after = {nonces.take() for _ in range(200)}
    assert not child & parent_after and not child & set(parent_next)
