"""Tenant finalization after its last BYOK environment left BYOK, and deleting the BYOK vault.

When no environment of a tenant is in BYOK mode any more (and the operator turned the BYOK feature
off): `sql_restriction` is removed (for the tenant and so for all its remaining environments),
`final_byok_migration_at` is set, the tenant's BYOK vault is scheduled for deletion exactly
`byok_retention_days` (28) days later, and every remaining environment still in the SQL layout gets
a `relayout` job moving its audit and files out of SQL (`keyshift.migrate.relayout`). The last BYOK
environment may leave by migrating (the link job's finish), by `byok revert`, or by being deleted;
turning the BYOK flag off after the last one left finalizes too (`settle_hook`, reached through
`keyshift.control.byok_lifecycle`). The audit row `tenant.byok_finalized` says which.
`maintenance run` deletes the vault when due — keys purged, the tenant's BYOK keys `deleted`, vault
state `deleted` — and never before. A restore within the window undoes the finalization
(`unfinalize_tenant`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.db.models import ByokKey, Environment, Tenant, VaultRecord
from keyshift.errors import KeyshiftError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import KeyManager


def settle_hook(rt: Runtime, session: Session, tenant_id: str, why: str) -> dict[str, Any] | None:
    """keyshift.control.byok_lifecycle.SETTLE_HOOKS: finalize when the tenant's state calls for it."""
    return maybe_finalize_tenant(rt, session, tenant_id, trigger=why)


def maybe_finalize_tenant(
    rt: Runtime, session: Session, tenant_id: str, *, trigger: str = "migrated"
) -> dict[str, Any] | None:
    """Finalize the tenant if no BYOK environment is left and its BYOK feature is off (caller's
    transaction); `trigger` says what made the last one leave (audited)."""
    tenant = session.scalars(select(Tenant).where(Tenant.id == tenant_id).with_for_update()).one()
    if tenant.byok_feature or tenant.final_byok_migration_at is not None:
        return None
    if tenant.byok_vault_id is None and not tenant.sql_restriction:
        return None  # never a BYOK tenant: nothing to finalize
    remaining = session.scalar(
        select(func.count())
        .select_from(Environment)
        .where(
            Environment.tenant_id == tenant_id, Environment.enc_mode == "byok", Environment.state != "deleted"
        )
    )
    if remaining:
        return None
    now = rt.clock.now()
    tenant.sql_restriction = False
    tenant.final_byok_migration_at = now
    delete_after = now + timedelta(days=rt.settings.byok_retention_days)
    vault = session.get(VaultRecord, tenant.byok_vault_id) if tenant.byok_vault_id else None
    if vault is not None and vault.state == "active":
        vault.state = "scheduled_deletion"
        vault.delete_after = delete_after
    session.flush()
    from keyshift.migrate.relayout import start_relayouts

    relayouts = start_relayouts(rt, session, tenant_id)
    details = {
        "final_byok_migration_at": iso_z(now),
        "vault_delete_after": iso_z(delete_after),
        "trigger": trigger,
        "relayout_jobs": relayouts["jobs"],
        "relayout_waiting": relayouts["waiting"],
    }
    audit_trail.record(
        rt,
        session,
        "tenant.byok_finalized",
        target_type="tenant",
        target_id=tenant.id,
        tenant_id=tenant.id,
        reason=f"no BYOK environment left (last one {trigger}) and the BYOK feature is off",
        details=details,
    )
    return details


def unfinalize_tenant(rt: Runtime, session: Session, tenant_id: str) -> bool:
    """A BYOK environment came back (restore): the tenant is a BYOK tenant again."""
    tenant = session.scalars(select(Tenant).where(Tenant.id == tenant_id).with_for_update()).one()
    changed = False
    if tenant.final_byok_migration_at is not None:
        tenant.final_byok_migration_at = None
        changed = True
    if not tenant.sql_restriction:
        tenant.sql_restriction = True
        changed = True
    vault = session.get(VaultRecord, tenant.byok_vault_id) if tenant.byok_vault_id else None
    if vault is not None and vault.state == "scheduled_deletion":
        vault.state = "active"
        vault.delete_after = None
        changed = True
    if changed:
        session.flush()
        from keyshift.migrate.relayout import cancel_relayouts

        cancelled = cancel_relayouts(rt, session, tenant_id)
        audit_trail.record(
            rt,
            session,
            "tenant.byok_unfinalized",
            target_type="tenant",
            target_id=tenant.id,
            tenant_id=tenant.id,
            details={"relayouts_cancelled": cancelled},
        )
    return changed


def delete_due_vaults(rt: Runtime) -> dict[str, Any]:
    """Maintenance: delete every BYOK vault whose scheduled deletion is due (not before)."""
    now = rt.clock.now()
    with rt.transaction() as s:
        due = [
            (v.id, v.name, v.tenant_id)
            for v in s.scalars(
                select(VaultRecord).where(
                    VaultRecord.state == "scheduled_deletion", VaultRecord.delete_after <= now
                )
            )
        ]
    deleted: list[str] = []
    errors: dict[str, str] = {}
    for vault_id, name, tenant_id in due:
        try:
            purged = _purge_vault(rt, vault_id)
        except KeyshiftError as err:
            errors[name] = err.code
            audit_trail.record_failure(
                rt,
                "vault.scheduled_delete",
                err,
                target_type="vault",
                target_id=vault_id,
                tenant_id=tenant_id,
            )
            continue
        with rt.transaction() as s:
            v = s.get(VaultRecord, vault_id)
            assert v is not None
            v.state = "deleted"
            keys = s.scalars(
                select(ByokKey).where(ByokKey.tenant_id == tenant_id, ByokKey.state != "deleted")
            ).all()
            for k in keys:  # their key material is gone with the vault
                k.state, k.state_changed_at = "deleted", now
            s.flush()
            audit_trail.record(
                rt,
                s,
                "vault.scheduled_delete",
                target_type="vault",
                target_id=vault_id,
                tenant_id=tenant_id,
                details={"keys_purged": purged, "byok_keys_deleted": [k.name for k in keys]},
            )
        rt.forget_vault(vault_id)
        rt.forget_vault(name)
        deleted.append(name)
    return {"deleted": deleted, "errors": errors}


def _purge_vault(rt: Runtime, vault_id: str) -> list[str]:
    """Purge every key of a platform-owned vault whose deletion is due. Purge protection guards
    against a tenant's own mistakes; the platform's scheduled deletion lifts it first (audited)."""
    with rt.transaction() as s:
        v = s.get(VaultRecord, vault_id)
        assert v is not None
        if v.purge_protection:
            v.purge_protection = False
            s.flush()
            audit_trail.record(
                rt,
                s,
                "vault.purge_protection_lifted",
                target_type="vault",
                target_id=vault_id,
                tenant_id=v.tenant_id,
                reason="scheduled deletion due",
            )
    rt.forget_vault(vault_id)
    vault = rt.vault(vault_id)
    if not isinstance(vault, KeyManager):
        return []
    purged = []
    for info in vault.list_keys():
        if not info.deleted:
            vault.delete_key(info.ref.name)
        vault.purge_key(info.ref.name)
        purged.append(info.ref.name)
    return purged
