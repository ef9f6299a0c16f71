"""Keyshift: customer-managed encryption keys and online key-mode migration.

The public Python API is `keyshift.open()` (see keyshift.sdk) and the error family.
"""

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
from keyshift.sdk import Keyshift, open

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
