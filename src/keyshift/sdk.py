"""The Python SDK: what the platform's own services use to read and write environment data.

    import keyshift
    with keyshift.open() as ks:                       # or keyshift.open(home=..., database_url=...)
        env = ks.environment("contoso-prod")
        env.records.put("accounts", "a1", {"name": "Fabrikam"})
        env.records.get("accounts", "a1")
        env.audit.append({"action": "login"})
        env.files.put("img/logo.png", open("logo.png", "rb"))
        with env.files.open("img/logo.png") as f: ...

A thin shell over `keyshift.stores.service.EnvironmentData`: the SDK adds no behaviour of its own.
Errors are `keyshift.KeyshiftError` subclasses (NotFoundError, UsageError, ConflictError,
IntegrityError, KeyInaccessibleError, EnvironmentUnavailableError, ...).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from keyshift.runtime import Runtime
from keyshift.stores.service import EnvironmentData

__all__ = ["Keyshift", "open"]


class Keyshift:
    """One open Keyshift home. Use as a context manager or call close()."""

    def __init__(self, rt: Runtime) -> None:
        self.runtime = rt
        self._envs: dict[str, EnvironmentData] = {}

    def environment(self, name: str) -> EnvironmentData:
        """An environment's data (`.records`, `.audit`, `.files`), by name or id."""
        self._check_open()
        env = self._envs.get(name)
        if env is None:
            env = EnvironmentData(self.runtime, name)
            self._envs[name] = env
            self._envs[env.id] = env
        return env

    def _check_open(self) -> None:
        if self.runtime is None:
            raise ValueError("this Keyshift is closed")

    def close(self) -> None:
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None  # type: ignore[assignment]
            self._envs.clear()

    def __enter__(self) -> Keyshift:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.runtime is None else str(self.runtime.settings.home_path())
        return f"Keyshift({state})"


def open(
    home: str | Path | None = None,
    database_url: str | None = None,
    **options: Any,
) -> Keyshift:
    """Open a Keyshift home (defaults: $KEYSHIFT_HOME or ~/.keyshift; its database)."""
    principal = options.pop("principal", None) or f"service:sdk:{_user()}"
    return Keyshift(Runtime.open(home=home, database_url=database_url, principal=principal, **options))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry in some containers
        return "unknown"
