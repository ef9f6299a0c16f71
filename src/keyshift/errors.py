"""The error family. Every error Keyshift raises to a caller is a KeyshiftError.

Each class maps to exactly one CLI exit code (docs/CONCEPTS.md) and one HTTP status; `api/` and `cli/`
translate, nothing else does. Messages are for humans and never carry key material or plaintext.
Authentication failures of ciphertexts are one opaque error that never says why.
"""

from __future__ import annotations

from typing import ClassVar


class KeyshiftError(Exception):
    """Base error: a stable machine code, a human message, a CLI exit code and an HTTP status."""

    code: ClassVar[str] = "internal_error"
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    # For key vault errors: who caused the failure ("refused" by the key's owner, vault
    # "unreachable", or "local" to this process); None for every other error. See vaults/base.py.
    outcome: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            # Instance-level refinement of the stable code (e.g. "byok_feature_on"); the class
            # still decides exit code and HTTP status.
            self.code = code  # type: ignore[misc]

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def __str__(self) -> str:
        return self.message


class InternalError(KeyshiftError):
    """Something that should not happen did. Exit 1."""


class IntegrityError(KeyshiftError):
    """Stored data failed authentication or is structurally corrupt. Exit 1.

    The message may name *which* record or file failed (its id or path), never why.
    """

    code = "integrity_error"
    exit_code = 1
    http_status = 500


class UsageError(KeyshiftError):
    """Bad input from the caller: malformed value, out-of-range size, invalid name. Exit 2."""

    code = "invalid_argument"
    exit_code = 2
    http_status = 400


class NotFoundError(KeyshiftError):
    """A named object does not exist. Exit 3."""

    code = "not_found"
    exit_code = 3
    http_status = 404


class ConflictError(KeyshiftError):
    """A precondition failed or the request conflicts with current state. Exit 4."""

    code = "precondition_failed"
    exit_code = 4
    http_status = 409


class AlreadyExistsError(ConflictError):
    code = "already_exists"


class PermissionDeniedError(KeyshiftError):
    """The caller (API principal) may not do this. Exit 5."""

    code = "permission_denied"
    exit_code = 5
    http_status = 403


class AuthenticationError(KeyshiftError):
    """The caller could not be authenticated. Opaque on purpose. Exit 5."""

    code = "unauthenticated"
    exit_code = 5
    http_status = 401

    def __init__(self, message: str = "authentication failed", *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class KeyInaccessibleError(KeyshiftError):
    """A key cannot be used: not found in its vault, disabled, expired, access denied. Exit 6."""

    code = "key_inaccessible"
    exit_code = 6
    http_status = 424
    outcome = "refused"


class VaultUnavailableError(KeyInaccessibleError):
    """The vault could not be reached or answered with a server error. Retryable. Exit 6."""

    code = "vault_unavailable"
    http_status = 503
    retryable = True
    outcome = "unreachable"


class EnvironmentUnavailableError(KeyshiftError):
    """The environment is disabled or locked; every read and write is refused. Exit 7."""

    code = "environment_disabled"
    exit_code = 7
    http_status = 423


class DatabaseUnavailableError(ConflictError):
    """The state database could not be reached (down, refused, bad credentials). Retryable. Exit 4."""

    code = "database_unavailable"
    http_status = 503
    retryable = True


EXIT_CODES: dict[int, str] = {
    0: "ok",
    1: "internal error",
    2: "usage",
    3: "not found",
    4: "precondition failed / conflict",
    5: "permission denied",
    6: "key inaccessible or vault unavailable",
    7: "environment disabled or locked",
}
