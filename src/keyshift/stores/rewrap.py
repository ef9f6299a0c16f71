"""Rewrap every DEK of an environment under another KEK and move the binding, atomically.

Used by legacy BYOK apply/revert (control/byok.py); the online migrations have their own batched
pending/cutover variant (migrate/rewrap.py) built on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.db.models import Dek, DekWrap, Environment
from keyshift.errors import ConflictError, NotFoundError
from keyshift.runtime import Runtime
from keyshift.stores import keys as _keys
from keyshift.stores.envstate import env_states
from keyshift.vaults.base import WrappedKey


def rewrap_environment(
    rt: Runtime,
    env_id: str,
    target: _keys.KekTarget,
    *,
    old_wraps: Literal["retained", "destroyed"] = "retained",
    retain_until: datetime | None = None,
    binding: Mapping[str, Any] | None = None,
    action: str = "environment.rewrap",
) -> dict[str, Any]:
    """Rewrap every DEK of an environment under `target` and point the binding at it, atomically.

    The vault calls happen first (unwrap each current wrap, wrap under the target); one transaction
    then turns the old current wraps into `old_wraps` (retained until `retain_until`, or destroyed:
    wrapped bytes wiped), inserts the new current wraps, sets the environment's kek_* columns (plus
    any extra `binding` columns, e.g. enc_mode) and records the admin audit row. If a DEK appeared or
    a wrap changed meanwhile, the whole step runs again. Returns a summary.
    """
    keys = _keys.data_keys(rt)
    for _ in range(5):
        with rt.transaction() as s:
            env = s.get(Environment, env_id)
            if env is None:
                raise NotFoundError(f"environment {env_id!r} not found", code="environment_not_found")
            name, tenant_id = env.name, env.tenant_id
            rows = s.execute(
                select(Dek.id, Dek.store, DekWrap)
                .join(DekWrap, and_(DekWrap.dek_id == Dek.id, DekWrap.state == "current"))
                .where(Dek.environment_id == env_id, Dek.state != "destroyed")
                .order_by(Dek.created_at, Dek.id)
            ).all()
            for row in rows:
                s.expunge(row[2])
        new_wraps: list[tuple[str, int, WrappedKey]] = []
        for dek_hex, store, wrap in rows:
            ctx = _keys._context(tenant_id, env_id, store)
            key = keys.cache.get(env_id, bytes.fromhex(dek_hex)) or keys.unwrap(rt, name, wrap, ctx)
            wrapped, _ = keys.wrap(rt, name, target, key, ctx)
            new_wraps.append((dek_hex, wrap.id, wrapped))
        with rt.transaction() as s:
            env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).one()
            now_rows = s.execute(
                select(Dek.id, DekWrap.id)
                .join(DekWrap, and_(DekWrap.dek_id == Dek.id, DekWrap.state == "current"))
                .where(Dek.environment_id == env_id, Dek.state != "destroyed")
            ).all()
            if sorted(map(tuple, now_rows)) != sorted((d, w) for d, w, _ in new_wraps):
                continue
            summary = _commit_rewrap(rt, s, env, target, new_wraps, old_wraps, retain_until, binding)
            audit_trail.record(
                rt,
                s,
                action,
                target_type="environment",
                target_id=env_id,
                tenant_id=tenant_id,
                details={k: v for k, v in summary.items() if k != "environment"},
            )
        return summary
    raise ConflictError(
        f"environment {env_id!r} kept changing while its keys were rewrapped; retry",
        code="concurrent_update",
    )


def _commit_rewrap(
    rt: Runtime,
    s: Session,
    env: Environment,
    target: _keys.KekTarget,
    new_wraps: Iterable[tuple[str, int, WrappedKey]],
    old_wraps: str,
    retain_until: datetime | None,
    binding: Mapping[str, Any] | None,
) -> dict[str, Any]:
    now = rt.clock.now()
    version = target.key_version
    count = 0
    for dek_hex, old_id, wrapped in new_wraps:
        values: dict[str, Any] = {"state": old_wraps, "retain_until": retain_until}
        if old_wraps == "destroyed":
            values["wrapped"] = b""
        s.execute(update(DekWrap).where(DekWrap.id == old_id).values(**values))
        s.add(_keys.wrap_row(dek_hex, target.vault_id, wrapped, target.identity, "current", now))
        version = wrapped.key.version or version
        count += 1
    values = {
        "kek_vault_id": target.vault_id,
        "kek_key_name": target.key_name,
        "kek_key_version": version,
        "kek_identity": target.identity,
        **dict(binding or {}),
    }
    for k, v in values.items():
        setattr(env, k, v)
    s.flush()
    env_states(rt).invalidate(env.id)
    return {
        "environment": env.id,
        "deks": count,
        "key": f"{target.vault_id}/{target.key_name}" + (f"@{version}" if version else ""),
        "old_wraps": old_wraps,
    }
