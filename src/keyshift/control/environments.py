"""Environments: create with region and type, list, show (the environment encryption page), the
managed flag and features (with the SQL-restriction refusals).

A new environment is bound to the platform key: mode `platform`, managed_by `platform`, KEK = the
platform vault's platform key, used as the platform identity. A tenant under `sql_restriction` gets
the SQL-only layout (audit and files inside SQL); others get the document store and file storage.

`env_sql_restricted`: an environment is SQL-restricted while its tenant has `sql_restriction` and it
is not (yet) on a customer-managed key — a migrated environment's audit and files have left SQL, and
features enabled later get their storage under the CMK (docs/CONCEPTS.md).

Features: enabling one records it on the environment and then calls every hook in
`FEATURE_ENABLED_HOOKS` with `(rt, session, env, feature)` inside the same transaction (the data
plane appends a hook that creates the feature's storage under the environment's current key; a hook
error rolls the enable back). Hooks get the open session: they must not open another transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.control.common import (
    get_environment,
    get_tenant,
    iso,
    operation,
    platform_vault,
    validate_name,
    validate_region,
)
from keyshift.control.refs import ref, row_ref
from keyshift.control.revocation import state_evidence
from keyshift.db.models import ByokKey, Environment, Policy, Tenant, VaultRecord
from keyshift.db.types import new_id
from keyshift.errors import AlreadyExistsError, ConflictError, UsageError
from keyshift.runtime import Runtime

ENV_TYPES = ("production", "sandbox", "trial", "teams", "developer")
DEFAULT_ENV_TYPE = "sandbox"

# Features that need storage outside SQL: refused while the environment is SQL-restricted.
NON_SQL_FEATURES = (
    "search",
    "elastic-tables",
    "data-lake",
    "audit-retention",
    "large-files",
    "long-term-retention",
)
FEATURES = (*NON_SQL_FEATURES, "audit", "files")

SQL_LAYOUT = {"records": "sql", "audit": "sql", "files": "sql"}
DEFAULT_LAYOUT = {"records": "sql", "audit": "document", "files": "file_storage"}

FeatureHook = Callable[[Runtime, Session, Environment, str], None]
FEATURE_ENABLED_HOOKS: list[FeatureHook] = []


def env_sql_restricted(tenant: Tenant, env: Environment) -> bool:
    return bool(tenant.sql_restriction) and env.enc_mode != "cmk"


def validate_type(env_type: str | None) -> str:
    value = DEFAULT_ENV_TYPE if env_type is None else env_type
    if value not in ENV_TYPES:
        raise UsageError(
            f"unknown environment type {value!r}; expected one of {', '.join(ENV_TYPES)}",
            code="invalid_type",
        )
    return value


def create_environment(
    rt: Runtime,
    tenant_ref: str,
    name: str,
    *,
    region: str | None = None,
    env_type: str | None = None,
    byok: bool = False,
) -> dict[str, Any]:
    """Create an environment on the platform key, or with `byok` directly on the tenant's active
    BYOK key of the region (refused, with nothing created, when the tenant has none)."""
    with operation(
        rt, "environment.create", target_type="environment", details={"name": name, "byok": byok}
    ) as op:
        validate_name("environment", name)
        region = validate_region(rt, region)
        env_type = validate_type(env_type)
        s = op.session
        tenant = get_tenant(s, tenant_ref)
        op.tenant_id = tenant.id
        op.details.update(region=region, type=env_type)
        if tenant.locked_at is not None:
            raise ConflictError(f"tenant {tenant.name!r} is locked", code="tenant_locked")
        if s.scalars(select(Environment.id).where(Environment.name == name)).first() is not None:
            raise AlreadyExistsError(f"environment {name!r} already exists", code="environment_exists")
        vault = platform_vault(rt, s)
        env = Environment(
            id=new_id("env"),
            tenant_id=tenant.id,
            name=name,
            region=region,
            type=env_type,
            managed=False,
            state="enabled",
            state_changed_at=rt.clock.now(),
            features=[],
            stores=dict(SQL_LAYOUT if tenant.sql_restriction else DEFAULT_LAYOUT),
            enc_mode="platform",
            enc_managed_by="platform",
            enc_status="encrypted",
            kek_vault_id=vault.id,
            kek_key_name=rt.settings.platform_key,
            kek_key_version=None,
            kek_identity=rt.settings.platform_identity,
            created_at=rt.clock.now(),
        )
        if byok:
            key = active_byok_key(s, tenant, region)
            env.enc_mode, env.enc_managed_by, env.byok_key_id = "byok", "customer", key.id
            env.kek_vault_id, env.kek_key_name = tenant.byok_vault_id, key.vault_key_name
        s.add(env)
        s.flush()
        op.target_id = env.id
        return environment_view(rt, s, env)


def list_environments(
    rt: Runtime, *, tenant: str | None = None, with_policies: bool = False
) -> list[dict[str, Any]]:
    """All environments (optionally of one tenant); `with_policies` keeps those linked to a policy."""
    with rt.transaction() as s:
        stmt = select(Environment).where(Environment.state != "deleted").order_by(Environment.name)
        if tenant is not None:
            stmt = stmt.where(Environment.tenant_id == get_tenant(s, tenant).id)
        if with_policies:
            stmt = stmt.where(Environment.policy_id.is_not(None))
        out = []
        for env in s.scalars(stmt):
            out.append(environment_summary(rt, s, env))
        return out


def show_environment(rt: Runtime, ref: str) -> dict[str, Any]:
    with rt.transaction() as s:
        return environment_view(rt, s, get_environment(s, ref))


def set_managed(rt: Runtime, ref: str, managed: bool) -> dict[str, Any]:
    action = "environment.managed." + ("enable" if managed else "disable")
    with operation(rt, action, target_type="environment", details={"managed": managed}) as op:
        s = op.session
        env = get_environment(s, ref, lock=True)
        op.target_id, op.tenant_id = env.id, env.tenant_id
        require_not_deleted(env)
        if not managed and env.policy_id is not None:
            raise ConflictError(
                f"environment {env.name!r} is linked to a policy; remove it from the policy first",
                code="policy_linked",
            )
        op.details["changed"] = env.managed != managed
        env.managed = managed
        s.flush()
        return environment_view(rt, s, env)


def feature_target(op: Any, ref: str, feature: str) -> Environment:
    """The environment a feature change applies to, locked, once the feature name is known and the
    environment is not deleted (enable and disable share it; the operation records the target)."""
    if feature not in FEATURES:
        raise UsageError(
            f"unknown feature {feature!r}; expected one of {', '.join(FEATURES)}",
            code="invalid_feature",
        )
    env = get_environment(op.session, ref, lock=True)
    op.target_id, op.tenant_id = env.id, env.tenant_id
    require_not_deleted(env)
    return env


def enable_feature(rt: Runtime, ref: str, feature: str) -> dict[str, Any]:
    with operation(
        rt, "environment.feature.enable", target_type="environment", details={"feature": feature}
    ) as op:
        s = op.session
        env = feature_target(op, ref, feature)
        if env.state != "enabled":
            raise ConflictError(
                f"environment {env.name!r} is {env.state}; features cannot be enabled",
                code="environment_not_enabled",
            )
        tenant = s.get(Tenant, env.tenant_id)
        assert tenant is not None
        if feature in NON_SQL_FEATURES and env_sql_restricted(tenant, env):
            raise ConflictError(
                f"feature {feature!r} needs storage outside SQL, which the SQL restriction of tenant "
                f"{tenant.name!r} (legacy BYOK) does not allow; migrate the environment to a "
                "customer-managed key first",
                code="sql_restriction",
            )
        op.details["changed"] = feature not in env.features
        if feature not in env.features:
            env.features = [*env.features, feature]
            s.flush()
            for hook in list(FEATURE_ENABLED_HOOKS):
                hook(rt, s, env, feature)
        s.flush()
        return environment_view(rt, s, env)


def require_byok_tenant(tenant: Tenant, *, allow_locked: bool = False) -> None:
    """The tenant may use legacy BYOK now: not locked (unless allowed), feature on, has its vault."""
    # A locked tenant may only import and activate keys: that is how it unlocks
    # (docs/CONCEPTS.md; byok_lock.py).
    if tenant.locked_at is not None and not allow_locked:
        raise ConflictError(f"tenant {tenant.name!r} is locked", code="tenant_locked")
    if not tenant.byok_feature:
        raise ConflictError(
            f"tenant {tenant.name!r} does not have the legacy BYOK feature on", code="byok_feature_off"
        )
    if tenant.byok_vault_id is None:
        raise ConflictError(f"tenant {tenant.name!r} has no BYOK vault", code="no_byok_vault")


def active_byok_key(s: Session, tenant: Tenant, region: str) -> ByokKey:
    """The tenant's active BYOK key in `region`; ConflictError when BYOK does not apply or none is."""
    require_byok_tenant(tenant)
    key = s.scalars(
        select(ByokKey).where(
            ByokKey.tenant_id == tenant.id, ByokKey.region == region, ByokKey.state == "active"
        )
    ).first()
    if key is None:
        raise ConflictError(
            f"tenant {tenant.name!r} has no active BYOK key in region {region!r}; "
            "generate or import one and activate it first",
            code="no_active_key",
        )
    return key


def require_not_deleted(env: Environment) -> None:
    if env.state == "deleted":
        raise ConflictError(f"environment {env.name!r} is deleted", code="environment_deleted")


def render_managed_by(rt: Runtime, managed_by: str) -> str:
    """Human rendering (docs/CONCEPTS.md): customer_via_platform -> CustomerVia<PlatformName>."""
    if managed_by == "customer_via_platform":
        return f"CustomerVia{rt.settings.platform_name}"
    return {"platform": "Platform", "customer": "Customer"}.get(managed_by, managed_by)


def encryption_view(rt: Runtime, s: Session, env: Environment) -> dict[str, Any]:
    """The environment's encryption binding, as `env show` and `env list` both show it."""
    policy = s.get(Policy, env.policy_id) if env.policy_id else None
    vault = s.get(VaultRecord, env.kek_vault_id) if env.kek_vault_id else None
    byok_key = s.get(ByokKey, env.byok_key_id) if env.byok_key_id else None
    return {
        "mode": env.enc_mode,
        "managed_by": env.enc_managed_by,
        "managed_by_display": render_managed_by(rt, env.enc_managed_by),
        "status": env.enc_status,
        "policy": row_ref(policy) or ref(env.policy_id, None),
        "policy_health": policy.health if policy else None,
        "key": {
            "vault": row_ref(vault) if vault else ref(env.kek_vault_id, None),
            "name": env.kek_key_name,
            "version": env.kek_key_version,
            "identity": env.kek_identity,
            "byok_key": row_ref(byok_key),
        },
    }


def environment_summary(rt: Runtime, s: Session, env: Environment) -> dict[str, Any]:
    """An environment as `env list` gives it: a subset of `environment_view`, same shapes."""
    return {
        "id": env.id,
        "name": env.name,
        "tenant": row_ref(s.get(Tenant, env.tenant_id)),
        "region": env.region,
        "type": env.type,
        "managed": env.managed,
        "state": env.state,
        "encryption": encryption_view(rt, s, env),
        "created_at": iso(env.created_at),
    }


def environment_view(rt: Runtime, s: Session, env: Environment) -> dict[str, Any]:
    """The environment encryption page (the fields docs/CONCEPTS.md lists, plus a few more)."""
    tenant = s.get(Tenant, env.tenant_id)
    assert tenant is not None
    return {
        **environment_summary(rt, s, env),
        "state_reason": env.state_reason,
        "state_evidence": state_evidence(s, env),  # why it is disabled: vault, check, answer
        "sql_restriction": env_sql_restricted(tenant, env),
        "features": list(env.features or []),
        "stores": dict(env.stores or {}),
        "linked_at": iso(env.linked_at),
        "migrated_from_byok_at": iso(env.migrated_from_byok_at),
        "restore_until": iso(env.restore_until),
        "delete_after": iso(env.delete_after),
    }
