"""Link preconditions, used only until the control plane's `control/preconditions.check_can_link`
is present (then that one, the single source of the rules, is called instead)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.db.models import Environment, Policy, Tenant
from keyshift.errors import ConflictError
from keyshift.jobs.store import running_job_for
from keyshift.runtime import Runtime


def check_can_link(rt: Runtime, session: Session, env: Environment, policy: Policy) -> None:
    try:
        from keyshift.control.preconditions import check_can_link as control_check
    except ModuleNotFoundError:
        control_check = None
    if control_check is not None:
        control_check(rt, session, env, policy)
        return
    if not env.managed:
        raise ConflictError(f"environment {env.name!r} is not managed", code="env_not_managed")
    if env.region != policy.region:
        raise ConflictError("environment and policy are in different regions", code="region_mismatch")
    if env.type in ("trial", "teams"):
        raise ConflictError(f"{env.type} environments cannot use a customer key", code="env_type_not_allowed")
    tenant = session.scalars(select(Tenant).where(Tenant.id == env.tenant_id)).one()
    if tenant.byok_feature:
        raise ConflictError("the tenant's BYOK feature is still on", code="byok_feature_on")
    if policy.tenant_id != env.tenant_id:
        raise ConflictError("the policy belongs to another tenant", code="policy_other_tenant")
    job = running_job_for(session, env.id)
    if job is not None:
        raise ConflictError(f"job {job.id} is running on this environment", code="job_running")
    if policy.health != "healthy":
        raise ConflictError(f"policy {policy.name!r} is {policy.health}", code="policy_unhealthy")
    if env.policy_id is not None:
        raise ConflictError("the environment already has a policy", code="already_linked")
