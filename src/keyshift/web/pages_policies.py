"""Admin center: policies with health and reasons, creating a policy, checking health, and the
add-environment flow (starts the job, then shows its live progress)."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.control import environments, policies, vaults
from keyshift.errors import KeyshiftError, NotFoundError
from keyshift.migrate import link, maintenance
from keyshift.web.flash import flash_redirect
from keyshift.web.pages import SAFE_TEXT, web_allow, web_form
from keyshift.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/policies")
def policies_page(request: Request, ctx: Ctx = web_allow("collection")) -> Response:
    scope = ctx.tenant_filter
    rows = policies.list_policies(ctx.rt, tenant=scope)
    vault_rows = [
        v
        for v in vaults.list_vaults(ctx.rt)
        if v.get("owner") == "customer" and (scope is None or (v.get("tenant") or {}).get("id") == scope)
    ]
    from keyshift.control import tenants

    keys = {v["name"]: _usable_keys(ctx, v["name"]) for v in vault_rows}
    tenant_rows = [t for t in tenants.list_tenants(ctx.rt) if scope is None or t.get("id") == scope]
    return page(
        request,
        "policies.html",
        rows=rows,
        vaults=vault_rows,
        keys=keys,
        tenants=tenant_rows,
        regions=list(ctx.rt.settings.regions),
    )


def _usable_keys(ctx: Ctx, vault: str) -> list[str]:
    """Names of the vault's keys a policy can use (not deleted); none when the vault cannot list them."""
    try:
        return [k["name"] for k in vaults.list_keys(ctx.rt, vault) if not k["deleted"]]
    except KeyshiftError:
        return []


@router.post("/policies")
def create_policy(
    request: Request,
    tenant: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    name: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    region: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    vault: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    key: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("collection"),
) -> Response:
    tid = ctx.require_tenant(tenant)
    ctx.require_vault(vault)
    if key not in _usable_keys(ctx, vault):  # the form offers the vault's own keys only
        raise NotFoundError(f"key {key!r} not found in vault {vault!r}", code="key_not_found")
    view = policies.create_policy(ctx.rt, tid, name, region=region, vault=vault, key=key)
    return flash_redirect(
        request,
        f"/policies/{view['id']}",
        f"Policy {view['name']} created. Grant its identity get, wrapKey and unwrapKey on key {key}.",
    )


@router.get("/policies/{policy}")
def policy_page(request: Request, policy: str, ctx: Ctx = web_allow("policy")) -> Response:
    view = policies.show_policy(ctx.rt, policy)
    candidates = [
        e
        for e in environments.list_environments(ctx.rt, tenant=view["tenant"]["id"])
        if e["encryption"]["policy"] is None and e.get("region") == view["region"]
    ]
    return page(request, "policy.html", policy=view, candidates=candidates)


@router.post("/policies/{policy}/health")
def policy_check(
    request: Request,
    policy: str,
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("policy"),
) -> Response:
    view = maintenance.policy_health(ctx.rt, policy)
    return flash_redirect(request, f"/policies/{policy}", f"Health checked: {view['health']}.")


@router.post("/policies/{policy}/environments")
def policy_add_environment(
    request: Request,
    policy: str,
    environment: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("policy"),
) -> Response:
    ctx.require_env(environment)
    job = link.start_link(ctx.rt, policy, environment)
    return flash_redirect(request, f"/jobs/{job['id']}", "Adding the environment to the policy: job started.")


@router.post("/policies/{policy}/environments/{env}/remove")
def policy_remove_environment(
    request: Request,
    policy: str,
    env: str,
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("policy"),
) -> Response:
    """Return the environment to the platform key (a job; refused within 7 days of a BYOK migration)."""
    ctx.require_env(env)
    job = link.start_unlink(ctx.rt, policy, env)
    return flash_redirect(
        request, f"/jobs/{job['id']}", "Returning the environment to the platform key: job started."
    )
