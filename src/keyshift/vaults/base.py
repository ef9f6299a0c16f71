"""The KeyVault protocol every provider implements, its value types and its typed errors.

A vault holds KEKs; Keyshift only ever asks it to wrap and unwrap DEKs (32-byte AES keys), to
describe a key (type, size, versions, enabled, validity window) and to report which permissions an
identity holds on a key. Management (create, rotate, disable, grant, delete) is the optional
`KeyManager` protocol: external vaults may support part of it.

Every vault error says who caused it, as `err.outcome`:

- ``"refused"``: an authoritative answer of the vault about the key — disabled, destroyed or
  deleted, expired or not yet valid, access (grant, permission) removed, or a wrapped key that does
  not unwrap. Only this outcome can revoke, and only once it is confirmed on a fresh connection.
- ``"unreachable"``: transport failures, timeouts, a server down or answering with a server error.
  Retryable; it counts toward the grace period only as the health monitor sees it over time.
- ``"local"``: this process cannot use the vault — missing or wrong credentials or PIN, a missing
  module, token or configuration file, a client library missing or failing. It never changes
  shared state: the request fails (exit 6, HTTP 503) with a message naming the cause and the fix.
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

REFUSED = "refused"
UNREACHABLE = "unreachable"
LOCAL = "local"
OUTCOMES: frozenset[str] = frozenset((REFUSED, UNREACHABLE, LOCAL))


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
    # Holds AES keys natively (an HSM, a KMIP server, a cloud KMS): AES-256 is a valid CMK there.
    native_aes: bool = False
    # Why the probe failed (an error outcome), when not reachable.
    outcome: str | None = None


# -- typed errors ---------------------------------------------------------------------------------


class KeyNotFoundError(NotFoundError):
    """The vault answered that the key (or version) does not exist: destroyed, purged, never made."""

    code = "key_not_found"
    outcome = REFUSED


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
    """A wrapped key failed to unwrap (tampered, or wrapped under another key). Opaque.

    The vault's answer about that ciphertext ("refused"); it is an integrity failure of the stored
    data, never a revocation of the key by itself.
    """

    code = "unwrap_failed"
    outcome = REFUSED


class VaultLocalError(KeyInaccessibleError):
    """This process cannot use the vault: credentials, PIN, module, token or config file, client
    library. Not the key owner's decision and not an outage: it never changes shared state. The
    message names the cause and the fix. Exit 6, HTTP 503; not retried (a wrong PIN retried can
    lock the token)."""

    code = "vault_local_error"
    http_status = 503
    outcome = LOCAL


def outcome_of(exc: BaseException) -> str | None:
    """The outcome of a vault error ("refused" / "unreachable" / "local"), None for other errors."""
    value = getattr(exc, "outcome", None)
    return value if value in OUTCOMES else None


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
