"""Keyshift: customer-managed encryption keys and online key-mode migration.

The public Python API is `keyshift.open()` (see keyshift.sdk) and the error family.
"""

from typing import TYPE_CHECKING, Any

from keyshift.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConflictError,
    EnvironmentUnavailableError,
    IntegrityError,
    InternalError,
    KeyInaccessibleError,
    KeyshiftError,
    NotFoundError,
    PermissionDeniedError,
    UsageError,
    VaultUnavailableError,
)

if TYPE_CHECKING:
    from keyshift.sdk import Keyshift, open


def __getattr__(name: str) -> Any:
    # The SDK (and with it SQLAlchemy) loads on first use, so `keyshift --help` starts fast.
    if name in ("Keyshift", "open"):
        from keyshift import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'keyshift' has no attribute {name!r}")


__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "ConflictError",
    "EnvironmentUnavailableError",
    "IntegrityError",
    "InternalError",
    "KeyInaccessibleError",
    "Keyshift",
    "KeyshiftError",
    "NotFoundError",
    "PermissionDeniedError",
    "UsageError",
    "VaultUnavailableError",
    "open",
]
