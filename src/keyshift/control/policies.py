"""Enterprise policies (kind `encryption`): create (with their own identity), list, show, update,
delete. Update and delete are refused while environments are linked (docs/CONCEPTS.md: changing key = move
the environment to another policy). Health lives in `control.health`.

The policy identity (`pol-<random>`) is what the key's owner grants get/wrapKey/unwrapKey to.
Deleting a policy keeps its row (jobs and the audit trail may refer to it) in state `deleted` and
frees its name.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.control.common import (
    get_policy,
    get_tenant,
    get_vault_record,
    iso,
    operation,
    validate_name,
    validate_region,
)
from keyshift.control.refs import ref, row_ref
from keyshift.db.models import Environment, Policy, Tenant, VaultRecord
from keyshift.db.types import new_id
from keyshift.errors import AlreadyExistsError, ConflictError, UsageError
from keyshift.runtime import Runtime

MAX_KEY_NAME = 300


def new_identity() -> str:
    return f"pol-{secrets.token_hex(8)}"


def _key_args(key: str, key_version: str | None) -> tuple[str, str | None]:
    if not key or len(key) > MAX_KEY_NAME or any(c in key for c in "\x00\n\r"):
        raise UsageError("invalid key name", code="invalid_key")
    if key_version is not None and (not key_version or len(key_version) > 100):
        raise UsageError("invalid key version", code="invalid_key_version")
    return key, key_version


def create_policy(
    rt: Runtime,
    tenant_ref: str,
    name: str,
    *,
    region: str,
    vault: str,
    key: str,
    key_version: str | None = None,
) -> dict[str, Any]:
    with operation(rt, "policy.create", target_type="policy", details={"name": name}) as op:
        validate_name("policy", name)
        region = validate_region(rt, region)
        key, key_version = _key_args(key, key_version)
        s = op.session
        tenant = get_tenant(s, tenant_ref)
        op.tenant_id = tenant.id
        vrec = get_vault_record(s, vault)
        if vrec.owner == "platform":
            raise ConflictError(
                f"vault {vrec.name!r} is a platform vault; a policy needs a customer vault",
                code="platform_vault",
            )
        if vrec.tenant_id is not None and vrec.tenant_id != tenant.id:
            raise ConflictError(f"vault {vrec.name!r} belongs to another tenant", code="tenant_mismatch")
        if _name_taken(s, tenant.id, name):
            raise AlreadyExistsError(
                f"tenant {tenant.name!r} already has a policy named {name!r}", code="policy_exists"
            )
        policy = Policy(
            id=new_id("pol"),
            tenant_id=tenant.id,
            name=name,
            region=region,
            kind="encryption",
            vault_id=vrec.id,
            key_name=key,
            key_version=key_version,
            identity=new_identity(),
            state="enabled",
            health="undetermined",
            health_reasons=["never checked"],
            created_at=rt.clock.now(),
        )
        s.add(policy)
        s.flush()
        op.target_id = policy.id
        op.details.update(
            region=region, vault=vrec.name, key=key, key_version=key_version, identity=policy.identity
        )
        return policy_view(s, policy)


def _name_taken(s: Session, tenant_id: str, name: str) -> bool:
    return (
        s.scalars(select(Policy.id).where(Policy.tenant_id == tenant_id, Policy.name == name)).first()
        is not None
    )


def list_policies(rt: Runtime, *, tenant: str | None = None) -> list[dict[str, Any]]:
    with rt.transaction() as s:
        stmt = select(Policy).where(Policy.state != "deleted").order_by(Policy.name, Policy.id)
        if tenant is not None:
            stmt = stmt.where(Policy.tenant_id == get_tenant(s, tenant).id)
        return [policy_view(s, p, brief=True) for p in s.scalars(stmt)]


def show_policy(rt: Runtime, ref: str) -> dict[str, Any]:
    with rt.transaction() as s:
        return policy_view(s, get_policy(s, ref))


def update_policy(rt: Runtime, ref: str, *, key: str, key_version: str | None = None) -> dict[str, Any]:
    """Point the policy at another key (or pinned version). Refused while environments are linked."""
    with operation(rt, "policy.update", target_type="policy", details={"key": key}) as op:
        key, key_version = _key_args(key, key_version)
        s = op.session
        policy = get_policy(s, ref)
        op.target_id, op.tenant_id = policy.id, policy.tenant_id
        _refuse_if_linked(s, policy, "updated")
        op.details.update(
            previous={"key": policy.key_name, "key_version": policy.key_version},
            key_version=key_version,
        )
        policy.key_name, policy.key_version = key, key_version
        # The new key has not been checked yet.
        policy.health, policy.health_reasons = "undetermined", ["key changed; never checked"]
        policy.health_checked_at = policy.unhealthy_since = policy.observed_key_version = None
        s.flush()
        return policy_view(s, policy)


def delete_policy(rt: Runtime, ref: str) -> dict[str, Any]:
    with operation(rt, "policy.delete", target_type="policy") as op:
        s = op.session
        policy = get_policy(s, ref)
        op.target_id, op.tenant_id = policy.id, policy.tenant_id
        _refuse_if_linked(s, policy, "deleted")
        op.details.update(name=policy.name, identity=policy.identity)
        view = policy_view(s, policy)
        policy.state = "deleted"
        policy.name = f"{policy.name}~deleted~{policy.id}"[:200]
        s.flush()
        view["state"] = "deleted"
        return view


def _refuse_if_linked(s: Session, policy: Policy, verb: str) -> None:
    linked = s.scalars(
        select(Environment.name).where(Environment.policy_id == policy.id).order_by(Environment.name)
    ).all()
    if linked:
        raise ConflictError(
            f"policy {policy.name!r} cannot be {verb} while environments are linked to it "
            f"({', '.join(linked)}); remove or move them first",
            code="policy_in_use",
        )


def policy_view(s: Session, p: Policy, *, brief: bool = False) -> dict[str, Any]:
    """A policy; `brief` (for lists) leaves out the fields only `policy show` gives, and every field
    both give has the same shape (docs/API.md)."""
    envs = s.scalars(
        select(Environment).where(Environment.policy_id == p.id).order_by(Environment.name)
    ).all()
    view: dict[str, Any] = {
        "id": p.id,
        "name": p.name,
        "tenant": row_ref(s.get(Tenant, p.tenant_id)) or ref(p.tenant_id, None),
        "region": p.region,
        "kind": p.kind,
        "vault": row_ref(s.get(VaultRecord, p.vault_id)) or ref(p.vault_id, None),
        "key": p.key_name,
        "key_version": p.key_version,
        "identity": p.identity,
        "state": p.state,
        "health": p.health,
        "health_reasons": list(p.health_reasons or []),
        "health_checked_at": iso(p.health_checked_at),
        "environments": [
            {"id": e.id, "name": e.name, "state": e.state, "status": e.enc_status} for e in envs
        ],
        "created_at": iso(p.created_at),
    }
    if brief:
        return view
    view.update(
        observed_key_version=p.observed_key_version,
        unhealthy_since=iso(p.unhealthy_since),
    )
    return view
