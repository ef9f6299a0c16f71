"""What follows when a BYOK environment goes away: the tenant lock ends, the tenant finalizes.

A tenant's BYOK state must always have a way out, whichever way its BYOK environments leave:

- Tenant lock: it lasts while at least one environment of the tenant is `locked`. When none is
  left — each was unlocked (`byok unlock`), or deleted (the 28-day deletion, or `env delete`) — the
  lock ends (`tenant.lock_ended`, audited) and `env create` works again.
- Finalization: when the operator has turned the tenant's BYOK feature off and no environment of the
  tenant is in BYOK mode any more — each migrated to a customer-managed key, was reverted to the
  platform key (`byok revert`), or was deleted — the tenant finalizes
  (`keyshift.migrate.finalize`): the SQL restriction is lifted, the BYOK vault is scheduled for
  deletion 28 days later, and the remaining environments' audit and files move out of SQL (jobs).

`settle_tenant(rt, session, tenant_id, why=...)` checks both inside the caller's transaction; the
state-changing paths (unlock, revert, deletion, turning the BYOK flag off) call it, and
`settle_all` (a maintenance task) catches any tenant a crash left between two steps.

Finalization lives above the control plane (it starts jobs): it is reached through
`SETTLE_HOOKS` ("module:function" names imported when called), so control/ never imports
migrate/ at module level.
"""

from __future__ import annotations

import importlib
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.db.models import Environment, Tenant
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z

# Each hook: (rt, session, tenant_id, why) -> dict | None (what it did, or None).
SETTLE_HOOKS: list[str] = ["keyshift.migrate.finalize:settle_hook"]


def locked_count(s: Session, tenant_id: str) -> int:
    return int(
        s.scalar(
            select(func.count())
            .select_from(Environment)
            .where(Environment.tenant_id == tenant_id, Environment.state == "locked")
        )
        or 0
    )


def end_lock_if_clear(rt: Runtime, s: Session, tenant_id: str, *, why: str) -> bool:
    """End the tenant lock when no environment of the tenant is locked any more (audited)."""
    tenant = s.scalars(select(Tenant).where(Tenant.id == tenant_id).with_for_update()).one()
    if tenant.locked_at is None or locked_count(s, tenant_id):
        return False
    locked_at = iso_z(tenant.locked_at)
    tenant.locked_at = None
    s.flush()
    audit_trail.record(
        rt,
        s,
        "tenant.lock_ended",
        target_type="tenant",
        target_id=tenant_id,
        tenant_id=tenant_id,
        reason=f"no environment of tenant {tenant.name!r} is locked any more ({why})",
        details={"locked_at": locked_at, "why": why},
    )
    return True


def settle_tenant(rt: Runtime, s: Session, tenant_id: str, *, why: str) -> dict[str, Any]:
    """End the lock / finalize the tenant where its state calls for it (caller's transaction)."""
    out: dict[str, Any] = {"lock_ended": end_lock_if_clear(rt, s, tenant_id, why=why)}
    for target in SETTLE_HOOKS:
        module, attr = target.split(":")
        result = getattr(importlib.import_module(module), attr)(rt, s, tenant_id, why)
        if result is not None:
            out[attr] = result
    return out


def settle_all(rt: Runtime) -> dict[str, Any]:
    """Maintenance: settle every tenant that is locked, or BYOK-off but not yet finalized."""
    with rt.transaction() as s:
        ids = list(
            s.scalars(
                select(Tenant.id).where(
                    or_(
                        Tenant.locked_at.is_not(None),
                        (Tenant.byok_feature.is_(False))
                        & Tenant.byok_vault_id.is_not(None)
                        & Tenant.final_byok_migration_at.is_(None),
                    )
                )
            )
        )
    settled: dict[str, Any] = {}
    for tenant_id in ids:
        with rt.transaction() as s:
            result = settle_tenant(rt, s, tenant_id, why="maintenance")
        if result.get("lock_ended") or len(result) > 1:
            settled[tenant_id] = result
    return {"settled": settled}
