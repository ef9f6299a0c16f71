"""Tenants: create (optionally as a legacy BYOK tenant), list, show, and the operator's BYOK flag.

A BYOK tenant (`create --byok`) gets `byok_feature` and `sql_restriction` on and its own BYOK vault:
a local vault owned by the platform, named `byok-<tenant>`, soft delete 90 days, purge protection on.

`byok_flag_remove` turns `byok_feature` off and records the operator's ticket reference. It leaves
`sql_restriction` on: per the BYOK rules (docs/CONCEPTS.md) the restriction is lifted only when
the tenant's last BYOK environment has migrated to a customer-managed key (tenant finalization,
done by the migration part, `keyshift.migrate.finalize`). Until then the tenant's platform/BYOK
environments stay SQL-only, while an environment already on CMK is no longer restricted (see
`environments.env_sql_restricted`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from keyshift.control.common import (
    get_tenant,
    iso,
    operation,
    validate_name,
)
from keyshift.db.models import ByokKey, Environment, Tenant, VaultRecord
from keyshift.db.types import new_id
from keyshift.errors import AlreadyExistsError, ConflictError, UsageError
from keyshift.runtime import Runtime

BYOK_VAULT_SOFT_DELETE_DAYS = 90


def byok_vault_name(tenant_name: str) -> str:
    return f"byok-{tenant_name}"


def create_tenant(rt: Runtime, name: str, *, byok: bool = False) -> dict[str, Any]:
    with operation(rt, "tenant.create", target_type="tenant", details={"name": name, "byok": byok}) as op:
        validate_name("tenant", name)
        s = op.session
        if s.scalars(select(Tenant.id).where(Tenant.name == name)).first() is not None:
            raise AlreadyExistsError(f"tenant {name!r} already exists", code="tenant_exists")
        now = rt.clock.now()
        tenant = Tenant(
            id=new_id("ten"),
            name=name,
            byok_feature=byok,
            sql_restriction=byok,
            created_at=now,
        )
        op.target_id = op.tenant_id = tenant.id
        s.add(tenant)
        if byok:
            vname = byok_vault_name(name)
            if s.scalars(select(VaultRecord.id).where(VaultRecord.name == vname)).first() is not None:
                raise AlreadyExistsError(
                    f"a vault named {vname!r} already exists; cannot create the tenant's BYOK vault",
                    code="vault_exists",
                )
            vault = VaultRecord(
                id=new_id("vlt"),
                name=vname,
                kind="local",
                owner="platform",
                tenant_id=tenant.id,
                config={},
                soft_delete_days=BYOK_VAULT_SOFT_DELETE_DAYS,
                purge_protection=True,
                state="active",
                created_at=now,
            )
            s.add(vault)
            s.flush()
            tenant.byok_vault_id = vault.id
            op.details["byok_vault"] = vname
        s.flush()
        return tenant_view(s, tenant)


def list_tenants(rt: Runtime) -> list[dict[str, Any]]:
    with rt.transaction() as s:
        counts = dict(
            s.execute(
                select(Environment.tenant_id, func.count(Environment.id))
                .where(Environment.state != "deleted")
                .group_by(Environment.tenant_id)
            ).all()
        )
        return [
            {
                "id": t.id,
                "name": t.name,
                "byok_feature": t.byok_feature,
                "sql_restriction": t.sql_restriction,
                "environments": int(counts.get(t.id, 0)),
                "created_at": iso(t.created_at),
            }
            for t in s.scalars(select(Tenant).order_by(Tenant.name))
        ]


def show_tenant(rt: Runtime, ref: str) -> dict[str, Any]:
    with rt.transaction() as s:
        return tenant_view(s, get_tenant(s, ref))


def byok_flag_remove(rt: Runtime, ref: str, *, ticket: str) -> dict[str, Any]:
    """Operator only: turn the tenant's legacy BYOK feature off, recording the ticket reference."""
    with operation(rt, "tenant.byok_flag.remove", target_type="tenant", details={"ticket": ticket}) as op:
        ticket = (ticket or "").strip()
        if not ticket or len(ticket) > 200:
            raise UsageError("a ticket reference (1-200 characters) is required", code="ticket_required")
        s = op.session
        tenant = get_tenant(s, ref, lock=True)
        op.target_id = op.tenant_id = tenant.id
        if not tenant.byok_feature:
            raise ConflictError(
                f"tenant {tenant.name!r} does not have the BYOK feature on", code="byok_feature_off"
            )
        tenant.byok_feature = False
        tenant.byok_flag_ticket = ticket
        tenant.byok_flag_removed_at = rt.clock.now()
        s.flush()
        return tenant_view(s, tenant)


def tenant_view(s: Any, t: Tenant) -> dict[str, Any]:
    vault = s.get(VaultRecord, t.byok_vault_id) if t.byok_vault_id else None
    env_count = s.scalar(
        select(func.count(Environment.id)).where(
            Environment.tenant_id == t.id, Environment.state != "deleted"
        )
    )
    keys = s.scalars(
        select(ByokKey)
        .where(ByokKey.tenant_id == t.id, ByokKey.state != "deleted")
        .order_by(ByokKey.created_at, ByokKey.name)
    ).all()
    return {
        "id": t.id,
        "name": t.name,
        "byok_feature": t.byok_feature,
        "sql_restriction": t.sql_restriction,
        "byok_flag_ticket": t.byok_flag_ticket,
        "byok_flag_removed_at": iso(t.byok_flag_removed_at),
        "byok_vault": (
            {
                "id": vault.id,
                "name": vault.name,
                "state": vault.state,
                "delete_after": iso(vault.delete_after),
            }
            if vault is not None
            else None
        ),
        "final_byok_migration_at": iso(t.final_byok_migration_at),
        "last_key_change_at": iso(t.last_key_change_at),
        "locked_at": iso(t.locked_at),
        "environments": int(env_count or 0),
        "byok_keys": [byok_key_view(k) for k in keys],
        "created_at": iso(t.created_at),
    }


def byok_key_view(k: ByokKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "name": k.name,
        "region": k.region,
        "state": k.state,
        "source": k.source,
        "fingerprint": k.fingerprint,
        "activated_at": iso(k.activated_at),
        "created_at": iso(k.created_at),
    }
