"""Legacy BYOK apply and revert.

Applying rewraps every DEK of the environment under its tenant's active BYOK key of the
environment's region (`stores.keys.rewrap_environment`, which also flips the binding and writes the
audit row in one transaction); reverting rewraps them under the platform key (production
environments need the name typed as confirmation). An environment that migrated from BYOK to a
customer-managed key can never be re-encrypted with the BYOK key. Reverting the last BYOK
environment of a tenant whose BYOK feature is off finalizes the tenant, as a migration would.
"""

from __future__ import annotations

from typing import Any

from keyshift.control.byok_lifecycle import settle_tenant
from keyshift.control.common import get_environment, platform_vault, refuse
from keyshift.control.environments import (
    active_byok_key,
    require_byok_tenant,
    require_not_deleted,
    show_environment,
)
from keyshift.control.preconditions import running_job
from keyshift.db.models import Environment, Tenant, VaultRecord
from keyshift.errors import ConflictError, KeyshiftError, UsageError
from keyshift.runtime import Runtime


def apply(rt: Runtime, env_ref: str) -> dict[str, Any]:
    """Rewrap the environment under its tenant's active BYOK key of the environment's region."""
    from keyshift.stores.keys import KekTarget, rewrap_environment

    action = "byok.apply"
    fields: dict[str, Any] = {"target_type": "environment"}
    try:
        with rt.transaction() as s:
            env = get_environment(s, env_ref)
            fields.update(target_id=env.id, tenant_id=env.tenant_id)
            tenant = s.get(Tenant, env.tenant_id)
            assert tenant is not None
            require_byok_tenant(tenant)
            _require_rewrappable(s, env)
            if env.enc_mode == "cmk" or env.policy_id is not None:
                raise ConflictError(
                    f"environment {env.name!r} uses a customer-managed key (policy)", code="policy_linked"
                )
            if env.migrated_from_byok_at is not None:
                raise ConflictError(
                    f"environment {env.name!r} migrated from BYOK to a customer-managed key and can "
                    "never be re-encrypted with the BYOK key",
                    code="migrated_from_byok",
                )
            key = active_byok_key(s, tenant, env.region)
            if env.enc_mode == "byok" and env.byok_key_id == key.id:
                raise ConflictError(
                    f"environment {env.name!r} is already encrypted with key {key.name!r}",
                    code="already_applied",
                )
            target = KekTarget(tenant.byok_vault_id, key.vault_key_name, rt.settings.platform_identity)  # type: ignore[arg-type]
            binding = {
                "enc_mode": "byok",
                "enc_managed_by": "customer",
                "enc_status": "encrypted",
                "byok_key_id": key.id,
            }
            env_id = env.id
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
    _rewrap(rt, rewrap_environment, action, env_id, target, binding, fields)
    return show_environment(rt, env_id)


def revert(rt: Runtime, env_ref: str, *, confirm: str | None = None) -> dict[str, Any]:
    """Return a BYOK environment to the platform key (production: `confirm` must be its name)."""
    from keyshift.stores.keys import KekTarget, rewrap_environment

    action = "byok.revert"
    fields: dict[str, Any] = {"target_type": "environment"}
    try:
        with rt.transaction() as s:
            env = get_environment(s, env_ref)
            fields.update(target_id=env.id, tenant_id=env.tenant_id)
            if env.enc_mode != "byok":
                raise ConflictError(
                    f"environment {env.name!r} is not encrypted with a BYOK key (mode {env.enc_mode})",
                    code="not_byok",
                )
            if env.type == "production" and confirm != env.name:
                raise UsageError(
                    f"{env.name!r} is a production environment: type its name with --confirm to revert",
                    code="confirmation_required" if confirm is None else "confirmation_mismatch",
                )
            _require_rewrappable(s, env)
            vault: VaultRecord = platform_vault(rt, s)
            target = KekTarget(vault.id, rt.settings.platform_key, rt.settings.platform_identity)
            binding = {
                "enc_mode": "platform",
                "enc_managed_by": "platform",
                "enc_status": "encrypted",
                "byok_key_id": None,
            }
            env_id = env.id
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
    _rewrap(rt, rewrap_environment, action, env_id, target, binding, fields)
    view = show_environment(rt, env_id)
    with rt.transaction() as s:
        # The last BYOK environment of a BYOK-off tenant may just have left: finalize the tenant.
        settled = settle_tenant(rt, s, view["tenant"]["id"], why="reverted")
    view["tenant_finalized"] = "settle_hook" in settled
    if view["tenant_finalized"]:
        view = {**show_environment(rt, env_id), "tenant_finalized": True}
    return view


def _require_rewrappable(s: Any, env: Environment) -> None:
    require_not_deleted(env)
    if env.state != "enabled":
        raise ConflictError(f"environment {env.name!r} is {env.state}", code="environment_not_enabled")
    job = running_job(s, env.id)
    if job is not None:
        raise ConflictError(
            f"environment {env.name!r} has a job in progress ({job}); wait for it", code="job_running"
        )


def _rewrap(
    rt: Runtime,
    fn: Any,
    action: str,
    env_id: str,
    target: Any,
    binding: dict[str, Any],
    fields: dict[str, Any],
) -> None:
    try:
        fn(rt, env_id, target, old_wraps="destroyed", binding=binding, action=action)
    except KeyshiftError as err:
        raise refuse(rt, action, err, **fields) from None
