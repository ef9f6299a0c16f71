"""Preconditions for adding an environment to an enterprise policy (docs/CONCEPTS.md), in ONE function.

`check_policy_now(rt, policy)` checks the policy's key for real first (outside any transaction);
`check_can_link(rt, session, env, policy)` raises a ConflictError with its own code for the first
rule that fails; the link job (migration part) calls it before it starts and again at cutover.

| rule                                       | code                     |
|--------------------------------------------|--------------------------|
| environment exists and is not deleted      | environment_deleted      |
| environment is enabled                     | environment_not_enabled  |
| environment is a Managed Environment       | env_not_managed          |
| environment and policy in the same tenant  | tenant_mismatch          |
| same region as the policy                  | region_mismatch          |
| type is not trial or teams                 | env_type_not_allowed     |
| tenant's legacy BYOK feature is off        | byok_feature_on          |
| no other job running on the environment    | job_running              |
| the policy is enabled and healthy          | policy_not_healthy       |
| at most one policy per environment         | env_has_policy / already_linked |
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from keyshift.db.models import Environment, Policy, Tenant
from keyshift.errors import ConflictError
from keyshift.runtime import Runtime

LINK_FORBIDDEN_TYPES = ("trial", "teams")


def running_job(session: Session, env_id: str) -> Any | None:
    """The job holding the environment, if the jobs part is installed (else: no jobs exist)."""
    try:
        from keyshift.jobs.store import running_job_for
    except ImportError:
        return None
    return running_job_for(session, env_id)


def check_policy_now(rt: Runtime, policy_ref: str) -> None:
    """Before an environment is added: check the policy's key for real now (vault settings, key
    state, grants, a wrap/unwrap round trip as the policy identity), never trusting the last
    recorded health — a grant removed since then must refuse the link, and a policy never checked
    is simply checked. Runs outside any transaction (vault calls never hold one); the result is
    stored on the policy, where `check_can_link` reads it. A failure local to this process (PIN,
    credentials) raises VaultLocalError (exit 6) and records nothing."""
    from keyshift.control.common import refuse
    from keyshift.control.health import check_policy
    from keyshift.errors import KeyshiftError, NotFoundError

    try:
        check_policy(rt, policy_ref)
    except NotFoundError:
        return  # the add itself refuses it, in its audited operation
    except KeyshiftError as err:
        raise refuse(rt, "policy.add_env", err, target_type="policy", target_id=policy_ref) from None


def check_can_link(
    rt: Runtime, session: Session, env: Environment, policy: Policy, *, job_id: str | None = None
) -> None:
    """Raise ConflictError (one code per rule) unless `env` may be added to `policy` now.

    `job_id`: the link job calling this itself, which must not count as "another job running".
    """
    if env.state == "deleted":
        raise ConflictError(f"environment {env.name!r} is deleted", code="environment_deleted")
    if env.state != "enabled":
        raise ConflictError(
            f"environment {env.name!r} is {env.state}; only enabled environments can be linked",
            code="environment_not_enabled",
        )
    if not env.managed:
        raise ConflictError(
            f"environment {env.name!r} is not a Managed Environment; run `env managed enable` first",
            code="env_not_managed",
        )
    if env.tenant_id != policy.tenant_id:
        raise ConflictError(
            f"policy {policy.name!r} belongs to another tenant than environment {env.name!r}",
            code="tenant_mismatch",
        )
    if env.region != policy.region:
        raise ConflictError(
            f"environment {env.name!r} is in region {env.region!r}, policy {policy.name!r} in "
            f"{policy.region!r}; they must match",
            code="region_mismatch",
        )
    if env.type in LINK_FORBIDDEN_TYPES:
        raise ConflictError(
            f"environment {env.name!r} is a {env.type} environment; {' and '.join(LINK_FORBIDDEN_TYPES)} "
            "environments cannot use a customer-managed key",
            code="env_type_not_allowed",
        )
    tenant = session.get(Tenant, env.tenant_id)
    if tenant is not None and tenant.byok_feature:
        raise ConflictError(
            f"tenant {tenant.name!r} still has the legacy BYOK feature on; the operator must remove it "
            "(`tenant byok-flag remove`) before its environments can use a customer-managed key",
            code="byok_feature_on",
        )
    job = running_job(session, env.id)
    if job is not None and getattr(job, "id", None) != job_id:
        raise ConflictError(
            f"environment {env.name!r} has another job in progress ({getattr(job, 'id', job)})",
            code="job_running",
        )
    if policy.state != "enabled" or policy.health != "healthy":
        reasons = "; ".join(policy.health_reasons or []) or "never checked"
        raise ConflictError(
            f"policy {policy.name!r} is {policy.health} ({reasons}); run `policy health` and fix it first",
            code="policy_not_healthy",
        )
    if env.policy_id is not None:
        if env.policy_id == policy.id:
            raise ConflictError(
                f"environment {env.name!r} is already linked to policy {policy.name!r}", code="already_linked"
            )
        raise ConflictError(
            f"environment {env.name!r} is already linked to another policy; an environment has at most "
            "one (use `policy swap-env` to move it)",
            code="env_has_policy",
        )
