"""Fail closed: each runtime keeps a snapshot of every environment it touches and refreshes it at
most `settings.state_refresh_seconds` after it was read, so a state change made by another process
(disable, lock, key revoked) is seen within that bound. Every data-plane read and write calls
`require_usable` first; an environment that is not `enabled` is refused with
EnvironmentUnavailableError (exit 7) and its cached DEKs are flushed from this process.

Staleness is measured with a monotonic clock (not the injectable business clock, which tests may
stop): the bound is about real elapsed time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select

from keyshift.db.engine import read_transaction
from keyshift.db.models import Environment, Tenant
from keyshift.errors import EnvironmentUnavailableError, NotFoundError, UsageError
from keyshift.runtime import Runtime

EXTENSION = "keyshift.stores.envstate"


@dataclass(frozen=True)
class EnvView:
    """What the data plane needs to know about an environment, as of `fetched_at` (monotonic)."""

    id: str
    name: str
    tenant_id: str
    state: str
    stores: dict[str, str]
    features: tuple[str, ...]
    enc_mode: str
    sql_restriction: bool
    kek_vault_id: str | None
    kek_key_name: str | None
    kek_key_version: str | None
    kek_identity: str | None
    fetched_at: float = field(default=0.0, compare=False)


def _view(env: Environment, tenant: Tenant | None, now: float) -> EnvView:
    return EnvView(
        id=env.id,
        name=env.name,
        tenant_id=env.tenant_id,
        state=env.state,
        stores=dict(env.stores or {}),
        features=tuple(env.features or ()),
        enc_mode=env.enc_mode,
        sql_restriction=bool(tenant.sql_restriction) if tenant is not None else False,
        kek_vault_id=env.kek_vault_id,
        kek_key_name=env.kek_key_name,
        kek_key_version=env.kek_key_version,
        kek_identity=env.kek_identity,
        fetched_at=now,
    )


class EnvStates:
    """Per-runtime snapshots of environments, refreshed after `state_refresh_seconds`."""

    def __init__(self, rt: Runtime, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        self.monotonic = monotonic
        self._views: dict[str, EnvView] = {}
        self._lock = threading.Lock()
        # Called with the env id whenever a refresh finds an environment that is not enabled.
        self.on_unusable: list[Callable[[str], Any]] = []

    def _load(self, ref: str, *, by_name: bool) -> EnvView:
        with read_transaction(self.rt.sessions) as s:
            cond = or_(Environment.id == ref, Environment.name == ref) if by_name else Environment.id == ref
            rows = s.execute(
                select(Environment, Tenant)
                .join(Tenant, Tenant.id == Environment.tenant_id)
                .where(cond)
                .limit(2)
            ).all()
            if not rows:
                raise NotFoundError(f"environment {ref!r} not found", code="environment_not_found")
            if len(rows) > 1:
                raise UsageError(f"environment name {ref!r} is ambiguous; use its id", code="ambiguous_name")
            env, tenant = rows[0]
            view = _view(env, tenant, self.monotonic())
        with self._lock:
            self._views[view.id] = view
        if view.state != "enabled":
            for hook in list(self.on_unusable):
                hook(view.id)
        return view

    def resolve(self, name_or_id: str) -> EnvView:
        """Look an environment up by name or id (always read fresh)."""
        if not isinstance(name_or_id, str) or not name_or_id or len(name_or_id) > 200:
            raise UsageError("an environment name or id is required", code="invalid_name")
        return self._load(name_or_id, by_name=True)

    def get(self, env_id: str) -> EnvView:
        """The snapshot of an environment, re-read if older than the refresh bound.

        No lock on the way: one dict read (atomic) and one monotonic comparison per call.
        """
        view = self._views.get(env_id)
        if view is None or self.monotonic() - view.fetched_at >= self.rt.settings.state_refresh_seconds:
            view = self._load(env_id, by_name=False)
        return view

    def invalidate(self, env_id: str | None = None) -> None:
        with self._lock:
            if env_id is None:
                self._views.clear()
            else:
                self._views.pop(env_id, None)

    def require_usable(self, env_id: str) -> EnvView:
        """The environment's snapshot if it may be read and written; else the documented error (exit 7)."""
        view = self.get(env_id)
        if view.state != "enabled":
            check_usable(view)
        return view


def check_usable(view: EnvView) -> None:
    if view.state == "enabled":
        return
    if view.state == "locked":
        raise EnvironmentUnavailableError(
            f"environment {view.name!r} is locked; reads and writes are refused", code="environment_locked"
        )
    if view.state == "deleted":
        raise NotFoundError(f"environment {view.name!r} has been deleted", code="environment_deleted")
    raise EnvironmentUnavailableError(
        f"environment {view.name!r} is disabled; reads and writes are refused", code="environment_disabled"
    )


def env_states(rt: Runtime) -> EnvStates:
    return rt.extension(EXTENSION, EnvStates)  # type: ignore[no-any-return]
