"""Secret references: how an external vault's credentials are named without being stored.

The state database only ever holds a *reference* — the name of an environment variable or the path
of a file — never the secret. The secret is read when a vault adapter opens (or reconnects), used,
and not kept: not on the adapter object, not in errors, not in logs.

Stored form (JSON in VaultRecord.config): ``{"env": "HSM_PIN"}`` or ``{"file": "/etc/keyshift/pin"}``.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyshift.errors import UsageError
from keyshift.vaults.base import VaultLocalError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
MAX_SECRET_BYTES = 4096


class SecretUnavailableError(VaultLocalError):
    """The referenced secret could not be read (unset variable, missing or unsafe file) in this
    process: a local failure (outcome "local"), never a revocation. Exit 6."""

    code = "vault_secret_unavailable"


@dataclass(frozen=True)
class SecretRef:
    """A reference to a secret: exactly one of `env` (variable name) or `file` (absolute path)."""

    env: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if (self.env is None) == (self.file is None):
            raise UsageError("a secret reference names exactly one of an environment variable or a file")
        if self.env is not None and not _ENV_NAME.match(self.env):
            raise UsageError(f"{self.env!r} is not a valid environment variable name")
        if self.file is not None and not os.path.isabs(self.file):
            raise UsageError(f"secret file path must be absolute, got {self.file!r}")

    # -- (de)serialisation ------------------------------------------------------------------------
    @classmethod
    def from_options(cls, *, env: str | None, file: str | Path | None, what: str) -> SecretRef:
        """Build from CLI options; `file` is made absolute. Exactly one must be given."""
        if env and file:
            raise UsageError(f"give the {what} by environment variable or by file, not both")
        if not env and not file:
            raise UsageError(f"the {what} is required by reference: an environment variable or a file")
        if file:
            return cls(file=str(Path(file).expanduser().absolute()))
        return cls(env=env)

    @classmethod
    def from_config(cls, value: Any, *, what: str) -> SecretRef:
        if not isinstance(value, Mapping):
            raise UsageError(f"vault config: {what} must be a reference {{'env': ...}} or {{'file': ...}}")
        extra = set(value) - {"env", "file"}
        if extra:
            raise UsageError(f"vault config: {what} reference has unknown fields {sorted(extra)}")
        return cls(env=value.get("env"), file=value.get("file"))

    def to_config(self) -> dict[str, str]:
        return {"env": self.env} if self.env is not None else {"file": str(self.file)}

    def describe(self) -> str:
        """Where the secret comes from (safe to show: never the value)."""
        return f"environment variable {self.env}" if self.env is not None else f"file {self.file}"

    # -- reading ----------------------------------------------------------------------------------
    def read(self) -> str:
        """The secret's value, read now. Raises SecretUnavailableError naming only the reference."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None or value == "":
                raise SecretUnavailableError(
                    f"secret not available: environment variable {self.env} is not set in this "
                    f"process; export {self.env} in the environment of every Keyshift process "
                    "(CLI, serve, worker) that uses this vault"
                )
            return value
        return self._read_file(Path(str(self.file)))

    @staticmethod
    def _read_file(path: Path) -> str:
        try:
            st = path.stat()
        except OSError:
            raise SecretUnavailableError(
                f"secret not available: cannot read file {path} in this process; check that it "
                "exists and that this process's user may read it"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise SecretUnavailableError(f"secret not available: {path} is not a regular file")
        if st.st_mode & stat.S_IROTH:
            raise SecretUnavailableError(
                f"secret file {path} is readable by other users; restrict it (chmod 600) and retry"
            )
        if st.st_size > MAX_SECRET_BYTES:
            raise SecretUnavailableError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise SecretUnavailableError(f"secret not available: cannot read file {path}") from None
        value = text.rstrip("\r\n")
        if not value:
            raise SecretUnavailableError(f"secret not available: file {path} is empty")
        return value
