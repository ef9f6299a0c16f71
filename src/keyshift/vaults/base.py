"""The KeyVault protocol every provider implements, its value types and its typed errors.

A vault holds KEKs; Keyshift only ever asks it to wrap and unwrap DEKs (32-byte AES keys), to
describe a key (type, size, versions, enabled, validity window) and to report which permissions an
identity holds on a key. Management (create, rotate, disable, grant, delete) is the optional
`KeyManager` protocol: external vaults may support part of it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, TypeVar, runtime_checkable

from keyshift.errors import (
    IntegrityError,
    KeyInaccessibleError,
    NotFoundError,
    UsageError,
    VaultUnavailableError,
)


class KeyType(StrEnum):
    RSA = "RSA"
    AES = "AES"


class Permission(StrEnum):
    GET = "get"
    WRAP = "wrapKey"
    UNWRAP = "unwrapKey"


ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)


def parse_permissions(text: str) -> frozenset[Permission]:
    """`"get,wrapKey,unwrapKey"` -> permissions; unknown names are a usage error."""
    out: set[Permission] = set()
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        try:
            out.add(Permission(name))
        except ValueError:
            raise UsageError(
                f"unknown permission {name!r}; expected any of get, wrapKey, unwrapKey"
            ) from None
    if not out:
        raise UsageError("no permissions given")
    return frozenset(out)


@dataclass(frozen=True)
class KeyRef:
    """Names a key in a vault. `version=None` means the key's current version."""

    vault: str
    name: str
    version: str | None = None

    def at(self, version: str | None) -> KeyRef:
        return KeyRef(self.vault, self.name, version)

    def __str__(self) -> str:
        return f"{self.vault}/{self.name}" + (f"@{self.version}" if self.version else "")


@dataclass(frozen=True)
class WrappedKey:
    """A DEK wrapped under a KEK version. `key.version` is always the concrete version used."""

    key: KeyRef
    algorithm: str
    ciphertext: bytes
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyVersionInfo:
    version: str
    enabled: bool
    not_before: datetime | None = None
    expires: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class KeyInfo:
    ref: KeyRef  # version = current version
    key_type: KeyType
    size: int  # bits
    enabled: bool
    current_version: str
    versions: tuple[KeyVersionInfo, ...]
    deleted: bool = False  # soft-deleted (recoverable)
    purge_after: datetime | None = None

    def version_info(self, version: str | None = None) -> KeyVersionInfo:
        wanted = version or self.current_version
        for v in self.versions:
            if v.version == wanted:
                return v
        raise KeyNotFoundError(f"key {self.ref.vault}/{self.ref.name} has no version {wanted!r}")


@dataclass(frozen=True)
class VaultInfo:
    name: str
    kind: str
    soft_delete_days: int | None
    purge_protection: bool
    symmetric_only: bool = False
    reachable: bool = True
    detail: str = ""


# -- typed errors ---------------------------------------------------------------------------------


class KeyNotFoundError(NotFoundError):
    code = "key_not_found"


class KeyDisabledError(KeyInaccessibleError):
    code = "key_disabled"


class KeyExpiredError(KeyInaccessibleError):
    code = "key_expired"


class KeyNotYetValidError(KeyInaccessibleError):
    code = "key_not_yet_valid"


class KeyDeletedError(KeyInaccessibleError):
    code = "key_deleted"


class AccessDeniedError(KeyInaccessibleError):
    """The vault refused the identity (missing grant). Not the API caller's permission (exit 5)."""

    code = "access_denied"


class ThrottledError(VaultUnavailableError):
    code = "throttled"


class UnwrapError(IntegrityError):
    """A wrapped key failed to unwrap (tampered, or wrapped under another key). Opaque."""

    code = "unwrap_failed"


VAULT_ERRORS: tuple[type[Exception], ...] = (
    KeyNotFoundError,
    KeyInaccessibleError,
    UnwrapError,
)


# -- protocols ------------------------------------------------------------------------------------


@runtime_checkable
class KeyVault(Protocol):
    """What the data plane needs from a vault."""

    name: str
    kind: str

    def info(self) -> VaultInfo:
        """Vault-level properties; raises VaultUnavailableError when unreachable."""
        ...

    def describe(self, key: KeyRef) -> KeyInfo: ...

    def wrap(
        self, key: KeyRef, dek: bytes, *, identity: str, context: Mapping[str, str] | None = None
    ) -> WrappedKey:
        """Wrap `dek` under `key` (its current version when key.version is None).

        Checks the identity's `wrapKey` grant, key enabled and inside not-before/expires.
        """
        ...

    def unwrap(
        self, wrapped: WrappedKey, *, identity: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Unwrap with the exact version named in wrapped.key. Checks `unwrapKey` and key state."""
        ...

    def check_access(self, key: KeyRef, identity: str) -> frozenset[Permission]:
        """Which of get/wrapKey/unwrapKey `identity` holds on the key."""
        ...


@runtime_checkable
class KeyManager(Protocol):
    """Key management, where the vault allows it."""

    def create_key(
        self,
        name: str,
        key_type: KeyType,
        size: int,
        *,
        not_before: datetime | None = None,
        expires: datetime | None = None,
    ) -> KeyInfo: ...

    def rotate_key(self, name: str) -> KeyInfo: ...

    def set_enabled(self, name: str, enabled: bool, *, version: str | None = None) -> KeyInfo: ...

    def delete_key(self, name: str) -> KeyInfo: ...

    def recover_key(self, name: str) -> KeyInfo: ...

    def purge_key(self, name: str) -> None: ...

    def grant(self, name: str, identity: str, permissions: frozenset[Permission]) -> None: ...

    def revoke_grant(self, name: str, identity: str) -> None: ...

    def list_keys(self) -> list[KeyInfo]: ...


# -- retry ----------------------------------------------------------------------------------------

T = TypeVar("T")


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 4,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`, retrying errors marked retryable with capped exponential backoff and jitter.

    At most `attempts` calls; the last retryable error is raised if all fail. Non-retryable
    errors propagate at once.
    """
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    for attempt in range(attempts):
        try:
            return fn()
        except KeyInaccessibleError as exc:
            if not exc.retryable or attempt == attempts - 1:
                raise
            delay = min(max_delay, base_delay * (2**attempt))
            sleep(delay * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")  # pragma: no cover
