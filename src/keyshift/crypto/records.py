"""AES-256-GCM record cipher with associated data that names where the record lives.

blob = header (32 bytes: "KS", version, alg, dek id, nonce) || GCM ciphertext || tag (16 bytes)
associated data = header || AssociatedData.encode()

Because the AD binds tenant, environment, store, collection and record id (length-prefixed, so
no two different tuples encode alike) and the header itself, a ciphertext moved to another
record, table, environment, store or tenant fails authentication, and so does any header edit.
"""

from __future__ import annotations

import itertools
import struct
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyshift.crypto.dek import Budget, DataKey, DataKeyExhaustedError, Keyring, UsageBudget
from keyshift.crypto.format import (
    AUTH_FAILED,
    MALFORMED,
    MAX_RECORD_BLOB,
    MAX_RECORD_PLAINTEXT,
    NONCE_LEN,
    RECORD_HEADER_LEN,
    RECORD_LEAD,
    RECORD_OVERHEAD,
    RECORD_PREFIX_LEN,
    check_record_blob,
    parse_record_header,
    record_prefix,
)
from keyshift.crypto.nonces import take as _nonce
from keyshift.errors import IntegrityError, UsageError

MAX_AD_FIELD_BYTES = 4096
AD_FIELDS = ("tenant", "environment", "store", "collection", "record_id")
_U32 = struct.Struct(">I")
_MAX_CACHED_AEADS = 256
_COPY_LIMIT = 64 << 10  # below this, slicing the body is cheaper than a memoryview
_LEAD = RECORD_LEAD
# A record blob's parts as slice objects made once (a literal slice builds one per use).
_HEADER = slice(0, RECORD_HEADER_LEN)
_NONCE = slice(RECORD_PREFIX_LEN, RECORD_HEADER_LEN)
_BODY = slice(RECORD_HEADER_LEN, None)


def _field(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise UsageError(f"associated data field {name} must be a string")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"associated data field {name} is not valid text") from None
    if len(raw) > MAX_AD_FIELD_BYTES:
        raise UsageError(f"associated data field {name} is longer than {MAX_AD_FIELD_BYTES} bytes")
    return _U32.pack(len(raw)) + raw


@dataclass(frozen=True)
class AssociatedData:
    """Where a record lives. encode() = for each field in order: u32 BE length || UTF-8 bytes."""

    tenant: str
    environment: str
    store: str
    collection: str
    record_id: str
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = b"".join(_field(name, getattr(self, name)) for name in AD_FIELDS)
        object.__setattr__(self, "_encoded", encoded)

    def encode(self) -> bytes:
        return self._encoded

    def with_record(self, record_id: str) -> AssociatedData:
        """The same location with another record id."""
        return AssociatedData(self.tenant, self.environment, self.store, self.collection, record_id)


class AdPrefix:
    """The associated data of every record of one collection, encoded once.

    `for_record(id)` is byte for byte `AssociatedData(tenant, environment, store, collection,
    id).encode()` (same field checks), without building an object per record: the four shared
    fields are encoded here once, with the id's length field appended per id size (cached), and the
    record id is appended per call. `RecordCipher.encrypt_record` / `decrypt_record` take the
    prefix and the id and build the same bytes inline.
    """

    __slots__ = ("_heads", "prefix")

    def __init__(self, tenant: str, environment: str, store: str, collection: str) -> None:
        fields = zip(AD_FIELDS, (tenant, environment, store, collection), strict=False)
        self.prefix = b"".join(_field(name, value) for name, value in fields)
        self._heads: dict[int, bytes] = {}

    def head(self, size: int) -> bytes:
        """The prefix and the length field of a record id of `size` bytes (UsageError past the
        field limit)."""
        head = self._heads.get(size)
        if head is None:
            if size > MAX_AD_FIELD_BYTES:
                raise UsageError(f"associated data field record_id is longer than {MAX_AD_FIELD_BYTES} bytes")
            head = self._heads[size] = self.prefix + _U32.pack(size)
        return head

    def for_record(self, record_id: str) -> bytes:
        raw = _id_bytes(record_id)
        return self.head(len(raw)) + raw


@lru_cache(maxsize=4096)
def ad_prefix(tenant: str, environment: str, store: str, collection: str) -> AdPrefix:
    """The `AdPrefix` of one collection, made once per process (the record store, re-encryption
    and moves share them)."""
    return AdPrefix(tenant, environment, store, collection)


def _id_bytes(record_id: object) -> bytes:
    if type(record_id) is not str:
        raise UsageError("associated data field record_id must be a string")
    try:
        return record_id.encode()
    except UnicodeEncodeError:
        raise UsageError("associated data field record_id is not valid text") from None


def dek_id_of(blob: bytes) -> bytes:
    """Which DEK encrypted this blob (header only; no key needed). IntegrityError if malformed."""
    return parse_record_header(blob).dek_id


def _encrypt_with_nonce(key: DataKey, nonce: bytes, plaintext: bytes, ad: AssociatedData) -> bytes:
    """Deterministic encryption for known-answer vectors ONLY (tests/vectors/make_vectors.py).

    Reusing a nonce under one key breaks AES-GCM; the product path is RecordCipher.encrypt.
    """
    if len(nonce) != NONCE_LEN:
        raise ValueError("a record nonce is 12 bytes")
    header = record_prefix(key.id) + nonce
    return header + AESGCM(key.key).encrypt(nonce, plaintext, header + ad.encode())


class RecordCipher:
    """Encrypts under the keyring's primary DEK, decrypts under whichever DEK the header names.

    `budget` counts encryptions under the primary (default: an in-memory 2^31 budget). The
    cipher takes units from it in chunks of `budget_chunk` (falling back to single units near
    the limit), so a few units per cipher instance may go unused; the limit is never passed.
    When the budget refuses, encrypt raises DataKeyExhaustedError and the caller rolls to a new DEK.
    """

    def __init__(self, keyring: Keyring, budget: Budget | None = None, *, budget_chunk: int = 4096) -> None:
        if budget_chunk <= 0:
            raise ValueError("budget_chunk must be > 0")
        self._keyring = keyring
        primary = keyring.primary
        self._budget: Budget = budget if budget is not None else UsageBudget()
        self._chunk = budget_chunk
        self._tickets = itertools.count()
        self._granted = 0
        self._grant_lock = threading.Lock()
        aead = AESGCM(primary.key)
        self._primary_id = primary.id
        self._prefix = record_prefix(primary.id)
        self._enc_aead = aead
        self._aeads: dict[bytes, tuple[DataKey, AESGCM]] = {primary.id: (primary, aead)}

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def encrypt(self, plaintext: bytes, ad: AssociatedData) -> bytes:
        return self.encrypt_ad(plaintext, ad._encoded)

    def decrypt(self, blob: bytes, ad: AssociatedData) -> bytes:
        return self.decrypt_ad(blob, ad._encoded)

    def encrypt_ad(self, plaintext: bytes, ad: bytes) -> bytes:
        """Encrypt with associated data already encoded (`AssociatedData.encode()` or
        `AdPrefix.for_record()`)."""
        if len(plaintext) > MAX_RECORD_PLAINTEXT:
            raise UsageError(f"a record holds at most {MAX_RECORD_PLAINTEXT} bytes")
        ticket = next(self._tickets)  # atomic under the GIL; one ticket per encryption
        if ticket >= self._granted:
            self._take_budget(ticket)
        nonce = _nonce()
        header = self._prefix + nonce
        return header + self._enc_aead.encrypt(nonce, plaintext, header + ad)

    def encrypt_record(self, plaintext: bytes, prefix: AdPrefix, record_id: str) -> bytes:
        """`encrypt_ad(plaintext, prefix.for_record(record_id))` in one call (the record path; the
        id's checks and encoding are inlined here and in `decrypt_record`: a call per record costs
        more than they do)."""
        if len(plaintext) > MAX_RECORD_PLAINTEXT:
            raise UsageError(f"a record holds at most {MAX_RECORD_PLAINTEXT} bytes")
        if type(record_id) is not str:
            raise UsageError("associated data field record_id must be a string")
        try:
            raw = record_id.encode()
        except UnicodeEncodeError:
            raise UsageError("associated data field record_id is not valid text") from None
        head = prefix._heads.get(len(raw)) or prefix.head(len(raw))
        ticket = next(self._tickets)
        if ticket >= self._granted:
            self._take_budget(ticket)
        nonce = _nonce()
        header = self._prefix + nonce
        return header + self._enc_aead.encrypt(nonce, plaintext, header + head + raw)

    def decrypt_record(self, blob: bytes, prefix: AdPrefix, record_id: str) -> bytes:
        """`decrypt_ad(blob, prefix.for_record(record_id))` in one call (the record path).

        Tried first under the primary DEK without reading the header: the 32-byte header is part
        of the associated data, so a blob under another DEK, with other lead bytes, cut short,
        tampered with or moved fails its tag here. Anything but a clean success (a failed tag, a
        buffer that does not slice to bytes, a blob past the copy limit, an id that is not `str`
        or whose size was not seen yet) takes the checked path, which finds the blob's DEK or
        names the fault.
        The record store and re-encryption pick the cipher by the blob's DEK id, so for them the
        first try is the only one.
        """
        try:
            raw = record_id.encode()
            if type(record_id) is str and len(blob) <= _COPY_LIMIT:
                ad = blob[_HEADER] + prefix._heads[len(raw)] + raw
                return self._enc_aead.decrypt(blob[_NONCE], blob[_BODY], ad)
        except Exception:  # noqa: S110 - every failure is judged again on the checked path
            pass
        return self._decrypt_record_checked(blob, prefix, record_id)

    def _decrypt_record_checked(self, blob: bytes, prefix: AdPrefix, record_id: str) -> bytes:
        if type(record_id) is not str:
            raise UsageError("associated data field record_id must be a string")
        try:
            raw = record_id.encode()
        except UnicodeEncodeError:
            raise UsageError("associated data field record_id is not valid text") from None
        head = prefix._heads.get(len(raw)) or prefix.head(len(raw))
        if type(blob) is not bytes:
            blob = bytes(check_record_blob(blob))
        size = len(blob)
        if size < RECORD_OVERHEAD or size > MAX_RECORD_BLOB:
            raise IntegrityError(MALFORMED)
        header = blob[:RECORD_HEADER_LEN]
        if header[:20] == self._prefix:
            aead = self._enc_aead
        elif header[:4] == _LEAD:
            aead = self._aead_for(header[4:20])
        else:
            raise IntegrityError(MALFORMED)
        body = blob[RECORD_HEADER_LEN:] if size <= _COPY_LIMIT else memoryview(blob)[RECORD_HEADER_LEN:]
        try:
            return aead.decrypt(header[20:], body, header + head + raw)
        except InvalidTag:
            raise IntegrityError(AUTH_FAILED) from None

    def decrypt_ad(self, blob: bytes, ad: bytes) -> bytes:
        """Decrypt with associated data already encoded (see `encrypt_ad`)."""
        if type(blob) is not bytes:
            blob = bytes(check_record_blob(blob))
        size = len(blob)
        if size < RECORD_OVERHEAD or size > MAX_RECORD_BLOB:
            raise IntegrityError(MALFORMED)
        header = blob[:RECORD_HEADER_LEN]
        if header[:20] == self._prefix:  # fast path: the primary DEK (also proves the lead bytes)
            aead = self._enc_aead
        elif header[:4] == _LEAD:
            aead = self._aead_for(header[4:20])
        else:
            raise IntegrityError(MALFORMED)
        body = blob[RECORD_HEADER_LEN:] if size <= _COPY_LIMIT else memoryview(blob)[RECORD_HEADER_LEN:]
        try:
            return aead.decrypt(header[20:], body, header + ad)
        except InvalidTag:
            raise IntegrityError(AUTH_FAILED) from None

    def _take_budget(self, ticket: int) -> None:
        # This encryption's ticket is past what was granted so far: take more from the budget.
        with self._grant_lock:
            while self._granted <= ticket:
                if self._budget.reserve(self._chunk):
                    self._granted += self._chunk
                elif self._budget.reserve(1):
                    self._granted += 1
                else:
                    raise DataKeyExhaustedError(
                        "the data key reached its encryption limit; roll to a new key"
                    )

    def _aead_for(self, dek_id: bytes) -> AESGCM:
        key = self._keyring.get(dek_id)
        entry = self._aeads.get(dek_id)
        if entry is not None and entry[0] is key:
            return entry[1]
        aead = AESGCM(key.key)
        if len(self._aeads) >= _MAX_CACHED_AEADS:
            primary = self._keyring.primary
            self._aeads = {primary.id: (primary, self._enc_aead)}
        self._aeads[dek_id] = (key, aead)
        return aead
