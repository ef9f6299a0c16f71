"""Lookups and key targets shared by the migration plans."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.db.models import Environment, Policy, VaultRecord
from keyshift.errors import ConflictError, KeyshiftError
from keyshift.runtime import Runtime
from keyshift.stores.keys import KekTarget
from keyshift.vaults.base import KeyRef


def find_environment(session: Session, ref: str, *, lock: bool = False) -> Environment:
    from keyshift.control.common import get_environment

    return get_environment(session, ref, lock=lock)


def find_policy(session: Session, ref: str) -> Policy:
    from keyshift.control.common import get_policy

    return get_policy(session, ref)


def policy_target(session: Session, policy: Policy) -> KekTarget:
    return KekTarget(policy.vault_id, policy.key_name, policy.identity, policy.key_version)


def platform_target(rt: Runtime, session: Session) -> KekTarget:
    row = session.scalars(select(VaultRecord).where(VaultRecord.name == rt.settings.platform_vault)).first()
    if row is None:
        raise ConflictError(
            "the platform vault is missing; run `keyshift init`", code="platform_vault_missing"
        )
    return KekTarget(row.id, rt.settings.platform_key, rt.settings.platform_identity, None)


def resolve_version(rt: Runtime, target: KekTarget) -> KekTarget:
    """Pin a target to a concrete key version (the current one unless pinned). Vault call."""
    if target.key_version:
        return target
    vault = rt.vault(target.vault_id)
    try:
        info = vault.describe(KeyRef(vault.name, target.key_name))
    except KeyshiftError:
        raise
    return KekTarget(target.vault_id, target.key_name, target.identity, info.current_version)


def binding_view(env: Environment) -> dict[str, Any]:
    return {
        "enc_mode": env.enc_mode,
        "enc_managed_by": env.enc_managed_by,
        "policy_id": env.policy_id,
        "kek_vault_id": env.kek_vault_id,
        "kek_key_name": env.kek_key_name,
        "kek_key_version": env.kek_key_version,
        "kek_identity": env.kek_identity,
        "byok_key_id": env.byok_key_id,
        "stores": dict(env.stores or {}),
    }
