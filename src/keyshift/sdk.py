"""The Python SDK: what the platform's own services use to read and write environment data.

    import keyshift
    with keyshift.open() as ks:                       # or keyshift.open(home=..., database_url=...)
        env = ks.environment("contoso-prod")
        env.records.put("accounts", "a1", {"name": "Fabrikam"})
        env.records.get("accounts", "a1")
        env.audit.append({"action": "login"})
        env.files.put("img/logo.png", open("logo.png", "rb"))
        with env.files.open("img/logo.png") as f: ...
        env.search_fields("accounts", ["name", "address.city"])   # builds the index (waits)
        env.search("accounts", "fabrikam paris", limit=10)
        env.lake.export("accounts"); env.lake.list(); env.lake.read(path)
        env.backups.create(); env.backups.list(); env.backups.restore(backup_id)

A thin shell over `keyshift.stores.service.EnvironmentData` and the feature services
(`keyshift.features.*`): the SDK adds no behaviour of its own.
Errors are `keyshift.KeyshiftError` subclasses (NotFoundError, UsageError, ConflictError,
IntegrityError, KeyInaccessibleError, EnvironmentUnavailableError, ...).
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from keyshift.runtime import Runtime
from keyshift.stores.service import EnvironmentData

__all__ = ["Environment", "Keyshift", "open"]


class Lake:
    """An environment's data lake: encrypted Parquet exports of its tables."""

    def __init__(self, rt: Runtime, env_id: str) -> None:
        self._rt, self._env = rt, env_id

    def export(self, table: str) -> dict[str, Any]:
        from keyshift.features.lake import export_table

        return export_table(self._rt, self._env, table)

    def list(self) -> list[dict[str, Any]]:
        from keyshift.features.lake import list_exports

        return list_exports(self._rt, self._env)

    def read(self, path: str, *, limit: int = 1000) -> dict[str, Any]:
        from keyshift.features.lake import read_export

        return read_export(self._rt, self._env, path, limit=limit)


class Backups:
    """An environment's encrypted backups (feature long-term-retention)."""

    def __init__(self, rt: Runtime, env_id: str) -> None:
        self._rt, self._env = rt, env_id

    def create(self, *, retention_days: int | None = None, note: str | None = None) -> dict[str, Any]:
        from keyshift.features.backups import create_backup

        return create_backup(self._rt, self._env, retention_days=retention_days, note=note)

    def list(self, *, include_purged: bool = False) -> list[dict[str, Any]]:
        from keyshift.features.backups import list_backups

        return list_backups(self._rt, self._env, include_purged=include_purged)

    def restore(self, backup_id: str) -> dict[str, Any]:
        """Restore one of this environment's backups into it (replacing its data)."""
        from keyshift.features.restore import restore_backup

        return restore_backup(self._rt, self._env, backup_id)


class Environment(EnvironmentData):
    """An environment's data plus its feature storages: `.search()`, `.lake`, `.backups`."""

    def __init__(self, rt: Runtime, env: str) -> None:
        super().__init__(rt, env)
        self.lake = Lake(rt, self.id)
        self.backups = Backups(rt, self.id)

    def search(self, table: str, words: str, *, limit: int = 10) -> dict[str, Any]:
        """Records of `table` whose searchable fields hold every word (decrypted results)."""
        from keyshift.features.search import search

        return search(self.rt, self.id, table, words, limit=limit)

    def search_fields(
        self, table: str, fields: list[str], *, wait: bool = True, timeout: float | None = None
    ) -> dict[str, Any]:
        """Declare the table's searchable fields; with `wait` the index job runs here until it ends
        (its final view), else a worker builds it (the started generation's view)."""
        from keyshift.features.search_jobs import set_fields

        view = set_fields(self.rt, self.id, table, list(fields))
        if not wait:
            return view
        from keyshift.jobs.runner import Worker
        from keyshift.jobs.store import find_job, to_view

        Worker(self.rt).run_job(view["job"], timeout=timeout)
        with self.rt.transaction() as s:
            return to_view(find_job(s, view["job"]))

    def __repr__(self) -> str:
        return f"Environment({self.name!r})"


class Keyshift:
    """One open Keyshift home. Use as a context manager or call close()."""

    def __init__(self, rt: Runtime) -> None:
        self.runtime = rt
        self._envs: dict[str, Environment] = {}

    def environment(self, name: str) -> Environment:
        """An environment's data (`.records`, `.audit`, `.files`, `.search()`, `.lake`, `.backups`),
        by name or id."""
        self._check_open()
        env = self._envs.get(name)
        if env is None:
            env = Environment(self.runtime, name)
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
    from keyshift.control.key_events import wire

    rt = Runtime.open(home=home, database_url=database_url, principal=principal, **options)
    return Keyshift(wire(rt))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry in some containers
        return "unknown"
