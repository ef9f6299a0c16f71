"""The rewrap primitives every key change shares: pending wraps per batch, then one cutover.

1. Batches: for each DEK, unwrap its `current` wrap and wrap it under the target KEK as a `pending`
   wrap (skipped if one exists: a batch is idempotent). Readers only use `current` wraps, so nothing
   changes for them. O(DEKs) vault calls, never O(rows); the unwrapped DEK goes into the process's
   DEK cache, so the phases after cutover (re-encryption, moves) do not unwrap it again.
2. Cutover: DEKs created since planning get their pending wraps, then ONE transaction (environment
   row locked) turns every `current` wrap into `retained` (kept for restore) or `destroyed` (wrapped
   bytes wiped), every `pending` into `current`, and rewrites the binding. The data plane creates
   DEKs under the same row lock and re-checks the binding, so none slips between.

Vault calls never run inside a DB transaction (a local vault opens its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.orm import Session, aliased

from keyshift.db.models import Dek, DekWrap, Environment
from keyshift.errors import ConflictError
from keyshift.runtime import Runtime
from keyshift.stores.envstate import env_states
from keyshift.stores.job_keys import job_keys
from keyshift.stores.keys import KekTarget, data_keys, wrap_row

_PENDING = aliased(DekWrap)


def target_from(data: Mapping[str, Any]) -> KekTarget:
    return KekTarget(data["vault_id"], data["key_name"], data["identity"], data.get("key_version"))


def target_dict(t: KekTarget) -> dict[str, Any]:
    return {
        "vault_id": t.vault_id,
        "key_name": t.key_name,
        "identity": t.identity,
        "key_version": t.key_version,
    }


def env_dek_ids(session: Session, env_id: str, *, missing_pending: bool = False) -> list[str]:
    """DEKs of the environment that have a current wrap (optionally: and no pending wrap yet)."""
    stmt = (
        select(Dek.id)
        .join(DekWrap, and_(DekWrap.dek_id == Dek.id, DekWrap.state == "current"))
        .where(Dek.environment_id == env_id, Dek.state != "destroyed")
        .order_by(Dek.created_at, Dek.id)
    )
    if missing_pending:
        stmt = stmt.where(~exists().where(_PENDING.dek_id == Dek.id, _PENDING.state == "pending"))
    return list(dict.fromkeys(session.scalars(stmt)))


def compute_wraps(
    rt: Runtime, env_id: str, dek_ids: list[str], target: KekTarget, *, job_id: str | None = None
) -> list[tuple[str, Any]]:
    """Vault calls (outside any transaction): the new wrapped keys for DEKs lacking a pending wrap.
    With a job id, the unwrapped keys are also held for the job's later phases (stores.job_keys)."""
    keys = data_keys(rt)
    pins = None if job_id is None else job_keys(rt, job_id, env_id)
    with rt.transaction() as s:
        env = s.get(Environment, env_id)
        if env is None:
            raise ConflictError(f"environment {env_id!r} vanished", code="environment_not_found")
        name, tenant_id = env.name, env.tenant_id
        rows = s.execute(
            select(Dek.id, Dek.store, DekWrap)
            .join(DekWrap, and_(DekWrap.dek_id == Dek.id, DekWrap.state == "current"))
            .where(
                Dek.id.in_(dek_ids),
                Dek.environment_id == env_id,
                Dek.state != "destroyed",
                ~exists().where(_PENDING.dek_id == Dek.id, _PENDING.state == "pending"),
            )
            .order_by(DekWrap.id.desc())
        ).all()
        for r in rows:
            s.expunge(r[2])
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for dek_hex, store, wrap in rows:
        if dek_hex in seen:
            continue
        seen.add(dek_hex)
        ctx = {"tenant": tenant_id, "environment": env_id, "store": store}
        key = keys.cache.get(env_id, bytes.fromhex(dek_hex))
        if key is None:
            key = keys.unwrap(rt, name, wrap, ctx)
            # kept (within the cache's bounds) for the phases after cutover: re-encryption and
            # moves decrypt with these same keys, so they need no second unwrap
            keys.cache.put(env_id, key)
        if pins is not None:
            pins.hold(rt, key)
        wrapped, _ = keys.wrap(rt, name, target, key, ctx)
        out.append((dek_hex, wrapped))
    return out


def insert_pending(rt: Runtime, session: Session, wraps: list[tuple[str, Any]], target: KekTarget) -> int:
    """Insert pending wraps (skipping DEKs that got one meanwhile). Caller's transaction."""
    now = rt.clock.now()
    added = 0
    for dek_hex, wrapped in wraps:
        has = session.scalars(
            select(DekWrap.id).where(DekWrap.dek_id == dek_hex, DekWrap.state == "pending").limit(1)
        ).first()
        if has is not None:
            continue
        session.add(wrap_row(dek_hex, target.vault_id, wrapped, target.identity, "pending", now))
        added += 1
    session.flush()
    return added


def drop_pending(session: Session, env_id: str) -> int:
    """Rollback of an unfinished key change: forget its pending wraps."""
    ids = select(Dek.id).where(Dek.environment_id == env_id).scalar_subquery()
    return rowcount(
        session.execute(delete(DekWrap).where(DekWrap.state == "pending", DekWrap.dek_id.in_(ids)))
    )


def rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def cutover(
    rt: Runtime,
    env_id: str,
    target: KekTarget,
    *,
    binding: Mapping[str, Any],
    old_wraps: str,
    retain_until: datetime | None,
    in_txn: Any,
    attempts: int = 20,
) -> dict[str, Any]:
    """Flip pending -> current and the binding in one transaction. `in_txn(session)` runs inside it
    (the job's guarded phase advance and audit record) so the flip and the checkpoint commit together."""
    for _ in range(attempts):
        with rt.transaction() as s:
            missing = env_dek_ids(s, env_id, missing_pending=True)
        if missing:
            wraps = compute_wraps(rt, env_id, missing, target)
            with rt.transaction() as s:
                insert_pending(rt, s, wraps, target)
            continue
        with rt.transaction() as s:
            env = s.scalars(select(Environment).where(Environment.id == env_id).with_for_update()).one()
            if env_dek_ids(s, env_id, missing_pending=True):
                continue  # a DEK was born meanwhile: wrap it too
            dek_ids = select(Dek.id).where(Dek.environment_id == env_id).scalar_subquery()
            values: dict[str, Any] = {"state": old_wraps, "retain_until": retain_until}
            if old_wraps == "destroyed":
                values["wrapped"] = b""
            flipped_old = rowcount(
                s.execute(
                    update(DekWrap)
                    .where(DekWrap.state == "current", DekWrap.dek_id.in_(dek_ids))
                    .values(**values)
                )
            )
            flipped = rowcount(
                s.execute(
                    update(DekWrap)
                    .where(DekWrap.state == "pending", DekWrap.dek_id.in_(dek_ids))
                    .values(state="current")
                )
            )
            version = s.scalars(
                select(DekWrap.key_version)
                .where(DekWrap.state == "current", DekWrap.dek_id.in_(dek_ids))
                .order_by(DekWrap.id.desc())
                .limit(1)
            ).first()
            env.kek_vault_id = target.vault_id
            env.kek_key_name = target.key_name
            env.kek_key_version = version or target.key_version
            env.kek_identity = target.identity
            for k, v in binding.items():
                setattr(env, k, v)
            s.flush()
            in_txn(s)
        env_states(rt).invalidate(env_id)
        return {"deks": int(flipped or 0), "old_wraps": int(flipped_old or 0), "key_version": version}
    raise ConflictError("the environment kept creating data keys during cutover; resume the job", code="busy")
