"""Changing the vault registry: rename a vault or change its options, and remove (unregister) one.

Keys, policies, environments and DEK wraps refer to vaults by id, so a rename touches nothing else.
Both actions are audited (`vault.update`, `vault.remove`), refusals too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from keyshift.control import audit_trail
from keyshift.control.vaults import VAULT_NAME_RE, tenant_names, validate_soft_delete_days, vault_view
from keyshift.db.models import VaultRecord
from keyshift.errors import AlreadyExistsError, ConflictError, KeyshiftError, UsageError
from keyshift.runtime import Runtime
from keyshift.vaults.registry import find_vault_record


def _validate_vault_name(name: str) -> None:
    if not isinstance(name, str) or not VAULT_NAME_RE.match(name):
        raise UsageError(
            f"invalid vault name {name!r}: 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            code="invalid_name",
        )


def tenant_id(rt: Runtime, tenant: str | None) -> str | None:
    """The id of the tenant named (name or id), None for None; NotFoundError if there is none."""
    if tenant is None:
        return None
    from keyshift.control.common import get_tenant

    with rt.transaction() as session:
        return get_tenant(session, tenant).id


def customer_vault(rt: Runtime, vault: str) -> VaultRecord:
    """The vault record to change (NotFoundError if none); the platform's own vaults are refused."""
    rec = find_vault_record(rt, vault)
    if rec.name == rt.settings.platform_vault or rec.owner == "platform":
        raise ConflictError(f"vault {rec.name!r} is managed by the platform", code="platform_vault")
    return rec


def update_vault(
    rt: Runtime,
    vault: str,
    *,
    name: str | None = None,
    soft_delete_days: int | None = None,
    purge_protection: bool | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Rename a vault or change its options (soft-delete days, purge protection on, tenant).

    Keys, policies and environments refer to vaults by id, so a rename changes nothing else. Purge
    protection cannot be turned off once on (as in real vaults). The platform vault is refused.
    Audited as `vault.update` with the before/after values.
    """
    target = vault
    try:
        rec = customer_vault(rt, vault)
        target = rec.name
        if name is None and soft_delete_days is None and purge_protection is None and tenant is None:
            raise UsageError(
                "nothing to change: give --name, --soft-delete-days, --purge-protection or --tenant"
            )
        if name is not None:
            _validate_vault_name(name)
        if soft_delete_days is not None:
            validate_soft_delete_days(soft_delete_days)
        if purge_protection is False and rec.purge_protection:
            raise ConflictError(
                f"purge protection of vault {rec.name!r} cannot be turned off", code="purge_protection_on"
            )
        new_tenant_id = tenant_id(rt, tenant)
        with rt.transaction() as session:
            row = session.get(VaultRecord, rec.id, with_for_update=True)
            if row is None or row.state != "active":
                raise ConflictError(f"vault {rec.name!r} is not active", code="vault_not_active")
            if name is not None and name != row.name:
                clash = session.scalars(select(VaultRecord.id).where(VaultRecord.name == name)).first()
                if clash:
                    raise AlreadyExistsError(f"vault {name!r} already exists")
            changes: dict[str, Any] = {}
            for field, value in (
                ("name", name),
                ("soft_delete_days", soft_delete_days),
                ("purge_protection", purge_protection),
                ("tenant_id", new_tenant_id),
            ):
                if value is not None and getattr(row, field) != value:
                    changes[field] = {"from": getattr(row, field), "to": value}
                    setattr(row, field, value)
            session.flush()
            audit_trail.record(
                rt,
                session,
                "vault.update",
                target_type="vault",
                target_id=row.name,
                tenant_id=row.tenant_id,
                details={"id": row.id, "changes": changes},
            )
            view = vault_view(row, tenant_names(session, [row.tenant_id]).get(row.tenant_id or ""))
    except DbIntegrityError:
        err: KeyshiftError = AlreadyExistsError(f"vault {name!r} already exists")
    except KeyshiftError as exc:
        err = exc
    else:
        rt.forget_vault(rec.name)
        rt.forget_vault(rec.id)
        return view
    audit_trail.record_failure(rt, "vault.update", err, target_type="vault", target_id=str(target)[:200])
    raise err


def remove_vault(rt: Runtime, vault: str) -> dict[str, Any]:
    """Unregister a vault. Refused while a policy, an environment's key, a DEK wrap or a tenant's
    BYOK setup uses it, and for a local vault that still holds keys (delete and purge them first,
    under their soft-delete retention and purge protection). External keys stay in their vault.
    Audited as `vault.remove`.
    """
    from sqlalchemy import func

    from keyshift.db.models import DekWrap, Environment, LocalKey, Policy, Tenant

    target = vault
    try:
        rec = find_vault_record(rt, vault)
        target = rec.name
        if rec.name == rt.settings.platform_vault or rec.owner == "platform":
            raise ConflictError(f"vault {rec.name!r} is managed by the platform", code="platform_vault")
        with rt.transaction() as session:
            row = session.get(VaultRecord, rec.id, with_for_update=True)
            if row is None or row.state == "deleted":
                raise ConflictError(f"vault {rec.name!r} is already removed", code="vault_deleted")
            policies = session.scalars(
                select(Policy.name).where(Policy.vault_id == row.id, Policy.state != "deleted")
            ).all()
            if policies:
                raise ConflictError(
                    f"vault {row.name!r} is used by policy {', '.join(sorted(policies))}; "
                    "delete the policies (or move their environments) first",
                    code="vault_in_use",
                )
            uses = {
                "environment": select(func.count()).where(
                    Environment.kek_vault_id == row.id, Environment.state != "deleted"
                ),
                "data key wrap": select(func.count()).where(DekWrap.vault_id == row.id),
                "tenant": select(func.count()).where(Tenant.byok_vault_id == row.id),
            }
            for what, stmt in uses.items():
                n = session.execute(stmt).scalar_one()
                if n:
                    raise ConflictError(f"vault {row.name!r} is used by {n} {what}(s)", code="vault_in_use")
            if row.kind == "local":
                keys = session.execute(select(func.count()).where(LocalKey.vault_id == row.id)).scalar_one()
                if keys:
                    raise ConflictError(
                        f"local vault {row.name!r} still holds {keys} key(s); delete and purge them first",
                        code="vault_not_empty",
                    )
            row.state = "deleted"
            row.name = f"{row.name}~removed~{row.id}"[:200]  # frees the name for a new vault
            session.flush()
            audit_trail.record(
                rt,
                session,
                "vault.remove",
                target_type="vault",
                target_id=rec.name,
                tenant_id=row.tenant_id,
                details={"id": row.id, "kind": row.kind},
            )
            view = {
                **vault_view(row, tenant_names(session, [row.tenant_id]).get(row.tenant_id or "")),
                "name": rec.name,
                "removed": True,
            }
    except KeyshiftError as exc:
        audit_trail.record_failure(rt, "vault.remove", exc, target_type="vault", target_id=str(target)[:200])
        raise
    rt.forget_vault(rec.name)
    rt.forget_vault(rec.id)
    return view
