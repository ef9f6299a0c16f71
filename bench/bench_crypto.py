"""Crypto core vs peers, single-threaded, one run, side by side.

Records (64 B, 1 KiB, 16 KiB, 1 MiB), encrypt and decrypt, ratios to raw pyca AESGCM:
* pyca AESGCM (baseline): os.urandom nonce, the same AD length as Keyshift's (header + location),
  output framed as nonce || ciphertext and split again on decrypt, as any real use must;
* pyca AESGCM primitive: the bare call with a fixed nonce and pre-split input (an upper bound);
* Keyshift RecordCipher: cached DEK, header + location AD, budget accounting, nonces from the
  block-buffered CSPRNG pool; with the AD built once, with the per-record AD the record store
  builds (encrypt_record / decrypt_record: AdPrefix + id), and with an AssociatedData object per
  record (the former path);
* Tink AEAD (AES256_GCM keyset, 5-byte key-id prefix);
* AWS Encryption SDK, raw AES wrapping key, non-signing committing suite
  (AES_256_GCM_HKDF_SHA512_COMMIT_KEY), with and without its caching materials manager;
* Fernet (AES-128-CBC + HMAC-SHA256, no associated data).
Streaming: 64 MiB through encrypt_stream / DecryptingReader at 1 MiB segments vs raw AESGCM over
1 MiB chunks, plus peak traced memory (tracemalloc) of the Keyshift stream calls.
"""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.common import Report, Section, ab_rounds, best_seconds, median
from keyshift.crypto.dek import Keyring, generate_dek
from keyshift.crypto.format import RECORD_HEADER_LEN
from keyshift.crypto.records import AdPrefix, AssociatedData, RecordCipher
from keyshift.crypto.stream import DecryptingReader, encrypt_stream

SIZES = [("64 B", 64), ("1 KiB", 1 << 10), ("16 KiB", 16 << 10), ("1 MiB", 1 << 20)]
AD = AssociatedData("contoso", "contoso-prod", "records", "accounts", "a-000001")
CONTEXT = {"tenant": AD.tenant, "environment": AD.environment, "table": AD.collection, "id": AD.record_id}
ROUNDS = 5
STREAM_BYTES = 64 << 20
SEGMENT = 1 << 20

Impl = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]  # (encrypt(pt) -> ct, decrypt(ct) -> pt)


def _keyshift() -> Impl:
    cipher = RecordCipher(Keyring(generate_dek()))
    return (lambda pt: cipher.encrypt(pt, AD)), (lambda ct: cipher.decrypt(ct, AD))


def _keyshift_per_record() -> Impl:
    """What the record store does per record: `encrypt_record` / `decrypt_record` with the table's
    AdPrefix and the record id (the AD built inline: prefix, cached length field, id)."""
    cipher = RecordCipher(Keyring(generate_dek()))
    prefix = AdPrefix(AD.tenant, AD.environment, AD.store, AD.collection)
    rid = AD.record_id
    enc, dec = cipher.encrypt_record, cipher.decrypt_record
    return (lambda pt: enc(pt, prefix, rid)), (lambda ct: dec(ct, prefix, rid))


def _keyshift_ad_object() -> Impl:
    """The former per-record path: an AssociatedData object built per record."""
    cipher = RecordCipher(Keyring(generate_dek()))
    fields = (AD.tenant, AD.environment, AD.store, AD.collection, AD.record_id)
    return (
        (lambda pt: cipher.encrypt(pt, AssociatedData(*fields))),
        (lambda ct: cipher.decrypt(ct, AssociatedData(*fields))),
    )


def _raw_framed() -> Impl:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(256))
    ad = os.urandom(RECORD_HEADER_LEN + len(AD.encode()))

    def enc(pt: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + aead.encrypt(nonce, pt, ad)

    return enc, (lambda blob: aead.decrypt(blob[:12], blob[12:], ad))


def _raw_primitive() -> Impl:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(256))
    nonce = os.urandom(12)
    ad = os.urandom(RECORD_HEADER_LEN + len(AD.encode()))
    return (lambda pt: aead.encrypt(nonce, pt, ad)), (lambda ct: aead.decrypt(nonce, ct, ad))


def _tink() -> Impl:
    import tink
    from tink import aead

    aead.register()
    primitive = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    ad = AD.encode()
    return (lambda pt: primitive.encrypt(pt, ad)), (lambda ct: primitive.decrypt(ct, ad))


def _esdk(caching: bool) -> Impl:
    import aws_encryption_sdk
    from aws_encryption_sdk import (
        Algorithm,
        CachingCryptoMaterialsManager,
        CommitmentPolicy,
        LocalCryptoMaterialsCache,
    )
    from aws_encryption_sdk.identifiers import EncryptionKeyType, WrappingAlgorithm
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider

    wrapping = os.urandom(32)

    class StaticProvider(RawMasterKeyProvider):  # type: ignore[misc]
        provider_id = "bench"

        def _get_raw_key(self, key_id: bytes) -> WrappingKey:
            return WrappingKey(
                wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                wrapping_key=wrapping,
                wrapping_key_type=EncryptionKeyType.SYMMETRIC,
            )

    provider = StaticProvider()
    provider.add_master_key(b"kek-1")
    client = aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    )
    suite = Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    if caching:
        cmm = CachingCryptoMaterialsManager(
            master_key_provider=provider,
            cache=LocalCryptoMaterialsCache(capacity=100),
            max_age=600.0,
            max_messages_encrypted=1 << 31,
        )
        where: dict[str, Any] = {"materials_manager": cmm}
    else:
        where = {"key_provider": provider}

    def enc(pt: bytes) -> bytes:
        ct, _ = client.encrypt(source=pt, encryption_context=CONTEXT, algorithm=suite, **where)
        return ct  # type: ignore[no-any-return]

    def dec(ct: bytes) -> bytes:
        pt, _ = client.decrypt(source=ct, **where)
        return pt  # type: ignore[no-any-return]

    return enc, dec


def _fernet() -> Impl:
    from cryptography.fernet import Fernet

    f = Fernet(Fernet.generate_key())
    return f.encrypt, f.decrypt


PEERS: list[tuple[str, Callable[[], Impl], bool]] = [
    ("pyca AESGCM, nonce||ct, same AD", _raw_framed, True),
    ("pyca AESGCM primitive only", _raw_primitive, False),
    ("Keyshift RecordCipher, AD built once", _keyshift, False),
    ("Keyshift RecordCipher + per-record AD (AdPrefix)", _keyshift_per_record, False),
    ("Keyshift RecordCipher + AssociatedData per record", _keyshift_ad_object, False),
    ("Tink AEAD AES256_GCM", _tink, False),
    ("AWS ESDK, raw AES keyring", lambda: _esdk(False), False),
    ("AWS ESDK + caching CMM", lambda: _esdk(True), False),
    ("Fernet", _fernet, False),
]


def _records(report: Report) -> Section:
    section = report.section(
        "crypto: record encrypt/decrypt (single thread, ops/s)",
        "ratio = ops/s / pyca AESGCM with nonce framing and the same AD, median of "
        f"{ROUNDS} interleaved rounds (spread min-max); higher is better",
    )
    impls: dict[str, Impl | str] = {}
    for name, factory, _ in PEERS:
        try:
            impls[name] = factory()
        except Exception as exc:
            impls[name] = f"{type(exc).__name__}: {exc}"
    for label, size in SIZES:
        plaintext = os.urandom(size)
        min_time = 0.1 if size <= 16 << 10 else 0.25
        for op in ("encrypt", "decrypt"):
            group = f"{label} {op}"
            fns: dict[str, Callable[[], object]] = {}
            for name, _, _ in PEERS:
                impl = impls[name]
                if isinstance(impl, str):
                    section.unavailable(group, name, impl)
                    continue
                enc, dec = impl
                try:
                    ct = enc(plaintext)
                    if dec(ct) != plaintext:
                        raise AssertionError("round trip mismatch")
                except Exception as exc:
                    section.unavailable(group, name, f"{type(exc).__name__}: {exc}")
                    continue
                if op == "encrypt":
                    fns[name] = lambda enc=enc, pt=plaintext: enc(pt)
                else:
                    fns[name] = lambda dec=dec, ct=ct: dec(ct)
            rounds = ab_rounds(fns, rounds=ROUNDS, min_time=min_time)
            base = next((rounds[n] for n, _, b in PEERS if b and n in rounds), None)
            for name, _, baseline in PEERS:
                if name in rounds:
                    mib = median(rounds[name]) * size / (1 << 20)
                    ref = None if baseline or base is None else base
                    section.add_rounds(group, name, rounds[name], ref, "ops/s", note=f"{mib:,.0f} MiB/s")
    # Keep the per-operation rows grouped by case for reading: sort by SIZES order, op, then peer order.
    order = {
        f"{label} {op}": i
        for i, (label, op) in enumerate((s[0], o) for s in SIZES for o in ("encrypt", "decrypt"))
    }
    peer_order = {name: i for i, (name, _, _) in enumerate(PEERS)}
    section.rows.sort(key=lambda r: (order.get(r.group, 99), peer_order.get(r.name, 99)))
    return section


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        self.size += n
        return n


def _streams(report: Report) -> Section:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    section = report.section(
        f"crypto: streaming {STREAM_BYTES >> 20} MiB at {SEGMENT >> 20} MiB segments (bytes/s)",
        "ratio = throughput / raw AESGCM over the same 1 MiB chunks; peak = tracemalloc peak during the call",
    )
    dek = generate_dek()
    ad = AD.encode()
    data = os.urandom(STREAM_BYTES)
    aead = AESGCM(AESGCM.generate_key(256))
    view = memoryview(data)

    def raw_encrypt() -> None:
        for offset in range(0, STREAM_BYTES, SEGMENT):
            aead.encrypt(os.urandom(12), view[offset : offset + SEGMENT], ad)

    nonce = os.urandom(12)
    raw_chunks = [aead.encrypt(nonce, view[o : o + SEGMENT], ad) for o in range(0, STREAM_BYTES, SEGMENT)]

    def raw_decrypt() -> None:
        for chunk in raw_chunks:
            aead.decrypt(nonce, chunk, ad)

    encrypted = io.BytesIO()
    encrypt_stream(dek, io.BytesIO(data), encrypted, ad, SEGMENT)
    blob = encrypted.getvalue()

    def ks_encrypt() -> None:
        encrypt_stream(dek, io.BytesIO(data), _Sink(), ad, SEGMENT)

    def ks_decrypt() -> None:
        reader = DecryptingReader(io.BytesIO(blob), lambda _id: dek, ad)
        buf = bytearray(SEGMENT)
        while reader.readinto(buf):
            pass

    def peak(fn: Callable[[], None]) -> int:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for group, raw, ours in (("encrypt", raw_encrypt, ks_encrypt), ("decrypt", raw_decrypt, ks_decrypt)):
        raw_rate = STREAM_BYTES / best_seconds(raw, repeat=3)
        section.add(group, "raw AESGCM, 1 MiB chunks", raw_rate, "B/s", baseline=True)
        rate = STREAM_BYTES / best_seconds(ours, repeat=3)
        peak_bytes = peak(ours)
        section.add(
            group,
            "Keyshift stream" + (" (encrypt_stream)" if group == "encrypt" else " (DecryptingReader)"),
            rate,
            "B/s",
            note=f"peak {peak_bytes / (1 << 20):.1f} MiB ({peak_bytes / SEGMENT:.1f} segments)",
        )
    return section


def run(report: Report) -> None:
    _records(report)
    _streams(report)
