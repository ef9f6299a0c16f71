"""Data encryption keys: the key value object, generation, the keyring and the usage budget.

A `Keyring` is an ordered set of DEKs: the primary encrypts, any known DEK decrypts (like a
key list in rotation: old ciphertexts name their DEK in the header, so rotation never forces a
re-encryption). DEKs that are not loaded can be fetched lazily through a resolver callback; the
keyring does not keep what the resolver returns, so the resolver (normally backed by `DekCache`)
stays the one place that decides how long an unwrapped key lives.

`UsageBudget` caps how many messages one DEK encrypts (AES-GCM with random 96-bit nonces: at most
2^31 before a new DEK takes over, docs/CONCEPTS.md). How the data plane persists it:

* the DEK row carries a counter `uses_reserved` (and the limit, 2^31);
* a process that encrypts under the DEK reserves a *block* (e.g. 2^20) with one atomic statement,
  `UPDATE dek SET uses_reserved = uses_reserved + :block WHERE id = :id AND
  uses_reserved + :block <= :limit` — one row updated means the block is granted;
* it wraps that in `BlockBudget(reserve_block=..., block=2**20)` and hands it to `RecordCipher`;
  the cipher takes one unit per encryption and asks for the next block only when the local one
  runs out; when the persistent counter refuses, the cipher raises `DataKeyExhaustedError` and the
  caller rolls the environment store to a fresh DEK. Blocks lost in a crash are simply never
  used: the counter over-counts, never under-counts.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from keyshift.crypto.format import DEK_ID_LEN
from keyshift.errors import ConflictError, IntegrityError

DEK_KEY_LEN = 32
DEFAULT_DEK_LIMIT = 1 << 31
DEFAULT_BLOCK = 1 << 20
UNKNOWN_KEY = "unknown data key"


class DataKeyExhaustedError(ConflictError):
    """The DEK reached its encryption budget; the caller must roll to a new DEK."""

    code = "dek_exhausted"


class DataKey:
    """An unwrapped AES-256 data key and its 16-byte id. Its repr never shows the key bytes."""

    __slots__ = ("id", "key")
    id: bytes
    key: bytes

    def __init__(self, id: bytes, key: bytes) -> None:
        if not isinstance(id, bytes) or len(id) != DEK_ID_LEN:
            raise ValueError("a data key id is 16 bytes")
        if not isinstance(key, bytes) or len(key) != DEK_KEY_LEN:
            raise ValueError("a data key is 32 bytes")
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "key", key)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("DataKey is immutable")

    @property
    def id_hex(self) -> str:
        return self.id.hex()

    def __repr__(self) -> str:
        return f"DataKey(id={self.id.hex()})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return self.id == other.id and hmac.compare_digest(self.key, other.key)

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy key bytes into whatever stores the pickle; refuse.
        raise TypeError("DataKey cannot be pickled")


def generate_dek() -> DataKey:
    """A fresh random AES-256 DEK with a random 16-byte id."""
    return DataKey(os.urandom(DEK_ID_LEN), os.urandom(DEK_KEY_LEN))


class Keyring:
    """Primary encrypts; any known DEK (or one the resolver supplies) decrypts."""

    def __init__(
        self,
        primary: DataKey,
        others: Iterable[DataKey] = (),
        resolve: Callable[[bytes], DataKey | None] | None = None,
    ) -> None:
        if not isinstance(primary, DataKey):
            raise TypeError("primary must be a DataKey")
        known: dict[bytes, DataKey] = {}
        for key in others:
            if not isinstance(key, DataKey):
                raise TypeError("others must be DataKeys")
            known[key.id] = key
        known[primary.id] = primary
        self._primary = primary
        self._known = known
        self._resolve = resolve

    @property
    def primary(self) -> DataKey:
        return self._primary

    def ids(self) -> list[bytes]:
        return list(self._known)

    def __contains__(self, dek_id: object) -> bool:
        return dek_id in self._known

    def get(self, dek_id: bytes) -> DataKey:
        """The DEK with this id. IntegrityError("unknown data key") if neither loaded nor resolvable.

        Errors the resolver raises (key inaccessible, vault unavailable) pass through unchanged.
        """
        key = self._known.get(dek_id)
        if key is not None:
            return key
        if self._resolve is not None:
            key = self._resolve(dek_id)
            if isinstance(key, DataKey) and key.id == dek_id:
                return key
        raise IntegrityError(UNKNOWN_KEY)

    def __repr__(self) -> str:
        return f"Keyring(primary={self._primary.id.hex()}, known={len(self._known)})"


class Budget(Protocol):
    def reserve(self, n: int = 1) -> bool:
        """Take n units; False (and nothing taken) if that would pass the limit."""
        ...


class UsageBudget:
    """An in-memory counter of encryptions under one DEK with a hard limit. Thread-safe."""

    def __init__(self, limit: int = DEFAULT_DEK_LIMIT, used: int = 0) -> None:
        if limit < 0 or used < 0:
            raise ValueError("limit and used must be >= 0")
        self.limit = limit
        self._used = used
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self._used)

    def reserve(self, n: int = 1) -> bool:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            if self._used + n > self.limit:
                return False
            self._used += n
            return True


class BlockBudget:
    """A local pool of units refilled in blocks from a persistent counter.

    `reserve_block(n) -> bool` must atomically take n units from the shared (e.g. database)
    counter, or return False when that would pass the DEK's limit. Thread-safe.
    """

    def __init__(self, reserve_block: Callable[[int], bool], block: int = DEFAULT_BLOCK) -> None:
        if block <= 0:
            raise ValueError("block must be > 0")
        self._reserve_block = reserve_block
        self.block = block
        self._left = 0
        self._lock = threading.Lock()

    @property
    def left(self) -> int:
        """Units reserved from the shared counter and not yet used by this process."""
        return self._left

    def reserve(self, n: int = 1) -> bool:
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            while self._left < n:
                want = max(self.block, n - self._left)
                if not self._reserve_block(want):
                    return False
                self._left += want
            self._left -= n
            return True
