"""The wiring every interface shares: settings, clock, database, vaults, DEK cache, principal.

The CLI, the REST API, the worker and the SDK each open one Runtime and call the service layer
(`control/`, `stores/`, `jobs/`, `migrate/`) with it. Nothing else holds global state.
"""

from __future__ import annotations

import copy
import getpass
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from keyshift.clock import Clock, FakeableClock
from keyshift.config import HomeInfo, Settings
from keyshift.db import schema
from keyshift.db.connect import open_engine, reachable
from keyshift.db.engine import make_sessionmaker, transaction

if TYPE_CHECKING:
    from keyshift.vaults.base import KeyVault


# How often a runtime looks at a cached vault adapter's record again (settings changed elsewhere).
VAULT_SETTINGS_RECHECK_SECONDS = 30.0


class Runtime:
    """One open Keyshift: use as a context manager or call close()."""

    def __init__(
        self,
        settings: Settings,
        home: HomeInfo,
        engine: Engine,
        clock: Clock,
        principal: str,
    ) -> None:
        self.settings = settings
        self.home = home
        self.engine = engine
        self.clock = clock
        self.principal = principal
        self.sessions: sessionmaker[Session] = make_sessionmaker(engine)
        self._vaults: dict[str, KeyVault] = {}
        # adapters opened by `vault()`: (when to look at the record again, its settings version)
        self._vault_versions: dict[str, tuple[float, int]] = {}
        self._extensions: dict[str, Any] = {}

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        database_url: str | None = None,
        *,
        clock: Clock | None = None,
        principal: str | None = None,
        settings: Settings | None = None,
        check_schema: bool = True,
    ) -> Runtime:
        overrides: dict[str, Any] = {}
        if home is not None:
            overrides["home"] = Path(home)
        if database_url is not None:
            overrides["database_url"] = database_url
        if settings is None:
            settings = Settings(**overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        info = HomeInfo.load(settings.home_path())
        settings = settings.with_home(info)  # the database URL and regions recorded by init
        url = settings.resolved_database_url()
        engine = open_engine(url)  # a bad URL is a usage error, not an internal one
        if check_schema:
            try:
                with reachable(url):
                    schema.require_current(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(
            settings=settings,
            home=info,
            engine=engine,
            clock=clock or FakeableClock(info.allow_fake_clock),
            principal=principal or f"operator:cli:{_user()}",
        )

    def close(self) -> None:
        # Extensions holding resources (e.g. the document store's engine) expose close().
        for ext in list(self._extensions.values()):
            closer = getattr(ext, "close", None)
            if callable(closer):
                closer()
        self.engine.dispose()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_principal(self, principal: str) -> Runtime:
        """A view of this runtime acting for another principal (one API request, say).

        Shares settings, engine, sessions, clock and the per-runtime extensions (DEK cache, ...);
        vault adapters are opened per view so that audited key operations name the right principal.
        """
        view = copy.copy(self)
        view.principal = principal
        view._vaults = {}
        view._vault_versions = {}
        return view

    # -- units of work -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with transaction(self.sessions) as session:
            yield session

    # -- vaults ------------------------------------------------------------------------------
    def vault(self, name_or_id: str) -> KeyVault:
        """The KeyVault adapter for a registered vault (cached per runtime).

        At most every VAULT_SETTINGS_RECHECK_SECONDS the vault record's settings version is read
        again: after `vault reconnect` (in any process) the adapter is opened anew on the new
        settings. An adapter put in the cache by its owner (a test's stand-in) is kept as is."""
        from keyshift.vaults.registry import adapter_for, find_vault_record, settings_version

        cached = self._vaults.get(name_or_id)
        if cached is not None:
            stamp = self._vault_versions.get(name_or_id)
            if stamp is None or time.monotonic() < stamp[0]:
                return cached
            if settings_version(self, name_or_id) == stamp[1]:
                self._vault_versions[name_or_id] = (
                    time.monotonic() + VAULT_SETTINGS_RECHECK_SECONDS,
                    stamp[1],
                )
                return cached
        row = find_vault_record(self, name_or_id)
        vault = adapter_for(self, row)
        self._vaults[name_or_id] = vault
        self._vault_versions[name_or_id] = (time.monotonic() + VAULT_SETTINGS_RECHECK_SECONDS, row.version)
        return vault

    def forget_vault(self, name_or_id: str | None = None) -> None:
        if name_or_id is None:
            self._vaults.clear()
            self._vault_versions.clear()
        else:
            self._vaults.pop(name_or_id, None)
            self._vault_versions.pop(name_or_id, None)

    # -- per-runtime singletons owned by other packages (DEK cache, stores, ...) --------------
    def extension(self, key: str, factory: Any) -> Any:
        value = self._extensions.get(key)
        if value is None:
            value = factory(self)
            self._extensions[key] = value
        return value


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # pragma: no cover - no passwd entry in some containers
        return "unknown"
