"""Starting key-change jobs: link (policy add-env), unlink (remove-env), swap (swap-env), rotate.

Each start checks its preconditions and creates the job in ONE audited transaction; a refusal is
recorded in the admin audit trail and leaves nothing behind. The job then runs in a worker (or in
this process with --wait).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from keyshift.control.preconditions import check_can_link, check_policy_now
from keyshift.db.models import Environment, Policy, Tenant
from keyshift.errors import ConflictError
from keyshift.jobs import store
from keyshift.migrate.common import find_environment, find_policy
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyRef


def _operation(rt: Runtime, action: str, **kw: Any) -> Any:
    from keyshift.control.common import operation

    return operation(rt, action, **kw)


def start_link(rt: Runtime, policy_ref: str, env_ref: str, *, reencrypt: bool = False) -> dict[str, Any]:
    """policy add-env: platform -> CMK or BYOK -> CMK, as a resumable job."""
    check_policy_now(rt, policy_ref)  # the key for real now, not the last recorded health
    with _operation(rt, "policy.add_env", target_type="environment", target_id=env_ref) as op:
        s = op.session
        env = find_environment(s, env_ref, lock=True)
        policy = find_policy(s, policy_ref)
        op.target_id, op.tenant_id = env.id, env.tenant_id
        check_can_link(rt, s, env, policy)
        from_byok = env.enc_mode == "byok"
        stores = dict(env.stores or {})
        params = {
            "target": "policy",
            "reencrypt": bool(reencrypt),
            "from_byok": from_byok,
            # A customer-key environment never keeps the SQL-only layout (a BYOK tenant's platform
            # environments have it too): audit and files move out of SQL on every link.
            "move_audit": stores.get("audit") == "sql",
            "move_files": stores.get("files") == "sql",
        }
        job = store.create_job(
            rt, s, "link", environment_id=env.id, tenant_id=env.tenant_id, policy_id=policy.id, params=params
        )
        op.details = {"job": job.id, "policy": policy.id, **params}
        return store.to_view(job)


def start_unlink(rt: Runtime, policy_ref: str, env_ref: str) -> dict[str, Any]:
    """policy remove-env: back to the platform key (job). Refused within 7 days of a BYOK migration."""
    with _operation(rt, "policy.remove_env", target_type="environment", target_id=env_ref) as op:
        s = op.session
        env = find_environment(s, env_ref, lock=True)
        policy = find_policy(s, policy_ref)
        op.target_id, op.tenant_id = env.id, env.tenant_id
        if env.policy_id != policy.id:
            raise ConflictError(
                f"environment {env.name!r} is not linked to policy {policy.name!r}", code="not_linked"
            )
        now = rt.clock.now()
        if env.migrated_from_byok_at is not None:
            until = env.migrated_from_byok_at + timedelta(days=rt.settings.unlink_block_days)
            if now < until:
                raise ConflictError(
                    f"environment {env.name!r} migrated from BYOK on {env.migrated_from_byok_at:%Y-%m-%d}; "
                    f"it cannot be removed from its policy before {until:%Y-%m-%d %H:%M} UTC",
                    code="unlink_blocked",
                )
        job = store.create_job(
            rt,
            s,
            "unlink",
            environment_id=env.id,
            tenant_id=env.tenant_id,
            policy_id=policy.id,
            params={"target": "platform"},
        )
        vault_id, key_name = policy.vault_id, policy.key_name
        op.details = {"job": job.id, "policy": policy.id}
        view = store.to_view(job)
    view["warnings"] = old_key_warnings(rt, vault_id, key_name)
    return view


def old_key_warnings(rt: Runtime, vault_id: str, key_name: str) -> list[str]:
    """The customer key must stay usable for 30 days after an unlink (docs/CONCEPTS.md): say so
    when it won't."""
    now = rt.clock.now()
    try:
        vault = rt.vault(vault_id)
        info = vault.describe(KeyRef(vault.name, key_name))
    except Exception as exc:  # a warning only; the job itself reports hard failures
        return [
            f"could not check the old key ({getattr(exc, 'code', type(exc).__name__)}); keep it "
            "usable for 30 days after the unlink"
        ]
    out = []
    if not info.enabled or info.deleted:
        out.append("the old key is disabled or deleted; it must stay usable for 30 days after the unlink")
    v = info.version_info()
    if v.expires is not None and v.expires < now + timedelta(days=30):
        out.append(
            f"the old key expires on {v.expires:%Y-%m-%d}, within 30 days; it must stay usable "
            "for 30 days after the unlink"
        )
    return out


def start_swap(rt: Runtime, policy_ref: str, env_ref: str) -> dict[str, Any]:
    """policy swap-env P ENV: move a linked environment to policy P's key (job)."""
    with _operation(rt, "policy.swap_env", target_type="environment", target_id=env_ref) as op:
        s = op.session
        env = find_environment(s, env_ref, lock=True)
        policy = find_policy(s, policy_ref)
        op.target_id, op.tenant_id = env.id, env.tenant_id
        if env.policy_id is None or env.enc_mode != "cmk":
            raise ConflictError(
                f"environment {env.name!r} is not linked to a policy; use `policy add-env`", code="not_linked"
            )
        if env.policy_id == policy.id:
            raise ConflictError(
                f"environment {env.name!r} already uses policy {policy.name!r}", code="same_policy"
            )
        _check_policy_fits(s, env, policy)
        job = store.create_job(
            rt,
            s,
            "swap",
            environment_id=env.id,
            tenant_id=env.tenant_id,
            policy_id=policy.id,
            params={"target": "policy", "from_policy": env.policy_id},
        )
        op.details = {"job": job.id, "policy": policy.id, "from_policy": env.policy_id}
        return store.to_view(job)


def _check_policy_fits(s: Session, env: Environment, policy: Policy) -> None:
    if policy.tenant_id != env.tenant_id:
        raise ConflictError("the policy belongs to another tenant", code="policy_other_tenant")
    if policy.region != env.region:
        raise ConflictError(
            f"policy region {policy.region!r} differs from environment region {env.region!r}",
            code="region_mismatch",
        )
    if policy.health != "healthy":
        raise ConflictError(
            f"policy {policy.name!r} is {policy.health}; run `policy health` and fix it first",
            code="policy_unhealthy",
        )
    tenant = s.get(Tenant, env.tenant_id)
    if tenant is not None and tenant.byok_feature:
        raise ConflictError("the tenant's BYOK feature is still on", code="byok_feature_on")


def start_rotate(rt: Runtime, session: Session, env: Environment, version: str) -> dict[str, Any] | None:
    """Rewrap a linked environment's DEKs under a new current version of its policy key (job).
    Returns None when another job holds the environment (rotation is retried on the next check)."""
    if store.running_job_for(session, env.id) is not None:
        return None
    job = store.create_job(
        rt,
        session,
        "rotate",
        environment_id=env.id,
        tenant_id=env.tenant_id,
        policy_id=env.policy_id,
        params={"target": "policy", "key_version": version, "from_version": env.kek_key_version},
    )
    from keyshift.control import audit_trail

    audit_trail.record(
        rt,
        session,
        "policy.rotation_detected",
        target_type="environment",
        target_id=env.id,
        tenant_id=env.tenant_id,
        details={"job": job.id, "from": env.kek_key_version, "to": version},
    )
    return store.to_view(job)
