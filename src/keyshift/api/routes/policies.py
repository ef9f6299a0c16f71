"""Enterprise policies: create, list, show, update, delete, health; linking environments runs as a
job and answers 202 Accepted with the job's URL (Location) and Retry-After."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from keyshift.api.access import Ctx, allow
from keyshift.api.models.job import Job, UnlinkJob
from keyshift.api.models.policy import Policy, PolicyHealth, PolicySummary
from keyshift.api.schemas import PolicyCreate, PolicyEnvironment, PolicyUpdate, SwapEnvironment
from keyshift.control import policies
from keyshift.migrate import link, maintenance

API_PREFIX = "/api/v1"
RETRY_AFTER_SECONDS = 2

router = APIRouter(tags=["policies"])


@router.get("/policies", response_model=list[PolicySummary])
def list_policies(tenant: str | None = None, ctx: Ctx = allow("collection")) -> list[dict[str, Any]]:
    tid = ctx.require_tenant(tenant) if tenant is not None else ctx.tenant_filter
    return policies.list_policies(ctx.rt, tenant=tid)


@router.post("/policies", response_model=Policy, status_code=status.HTTP_201_CREATED)
def create_policy(body: PolicyCreate, ctx: Ctx = allow("collection", write=True)) -> dict[str, Any]:
    tid = ctx.require_tenant(body.tenant)
    ctx.require_vault(body.vault)
    return policies.create_policy(
        ctx.rt,
        tid,
        body.name,
        region=body.region,
        vault=body.vault,
        key=body.key,
        key_version=body.key_version,
    )


@router.get("/policies/{policy}", response_model=Policy)
def show_policy(policy: str, ctx: Ctx = allow("policy")) -> dict[str, Any]:
    return policies.show_policy(ctx.rt, policy)


@router.patch("/policies/{policy}", response_model=Policy)
def update_policy(policy: str, body: PolicyUpdate, ctx: Ctx = allow("policy", write=True)) -> dict[str, Any]:
    return policies.update_policy(ctx.rt, policy, key=body.key, key_version=body.key_version)


@router.delete("/policies/{policy}", response_model=Policy)
def delete_policy(policy: str, ctx: Ctx = allow("policy", write=True)) -> dict[str, Any]:
    return policies.delete_policy(ctx.rt, policy)


@router.post("/policies/{policy}/health", response_model=PolicyHealth)
def check_health(policy: str, ctx: Ctx = allow("policy", write=True)) -> dict[str, Any]:
    """Check now (a real wrap/unwrap round trip as the policy identity) and store the result."""
    return maintenance.policy_health(ctx.rt, policy)


def _accepted(response: Response, job: dict[str, Any]) -> dict[str, Any]:
    response.headers["Location"] = f"{API_PREFIX}/jobs/{job['id']}"
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return job


@router.post("/policies/{policy}/environments", response_model=Job, status_code=status.HTTP_202_ACCEPTED)
def add_environment(
    policy: str, body: PolicyEnvironment, response: Response, ctx: Ctx = allow("policy", write=True)
) -> dict[str, Any]:
    """Add an environment to the policy: a resumable job (202, Location = the job, Retry-After)."""
    ctx.require_env(body.environment)
    return _accepted(response, link.start_link(ctx.rt, policy, body.environment, reencrypt=body.reencrypt))


@router.delete(
    "/policies/{policy}/environments/{env}", response_model=UnlinkJob, status_code=status.HTTP_202_ACCEPTED
)
def remove_environment(
    policy: str, env: str, response: Response, ctx: Ctx = allow("policy", write=True)
) -> dict[str, Any]:
    """Return the environment to the platform key (job)."""
    ctx.require_env(env)
    return _accepted(response, link.start_unlink(ctx.rt, policy, env))


@router.post("/policies/{policy}/swap", response_model=Job, status_code=status.HTTP_202_ACCEPTED)
def swap_environment(
    policy: str, body: SwapEnvironment, response: Response, ctx: Ctx = allow("policy", write=True)
) -> dict[str, Any]:
    """Move a linked environment to this policy's key (job)."""
    ctx.require_env(body.environment)
    return _accepted(response, link.start_swap(ctx.rt, policy, body.environment))


@router.post("/environments/{env}/restore", response_model=Job, status_code=status.HTTP_202_ACCEPTED)
def restore_before_migration(
    env: str, response: Response, ctx: Ctx = allow("env", write=True)
) -> dict[str, Any]:
    """Restore a migrated environment to its pre-migration state (within the retention window; job)."""
    from keyshift.migrate import restore

    return _accepted(response, restore.start_restore(ctx.rt, env))
