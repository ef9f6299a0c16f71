"""Admin center: the environment list with filters, a name search and pagination; creating an
environment; on the environment page, features on/off and restore before migration (with the
restore window). Every change goes through the service layer, which audits it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.clock import parse_time
from keyshift.control import env_features, env_search, environments, tenants
from keyshift.control.environments import ENV_TYPES, FEATURES
from keyshift.errors import KeyshiftError
from keyshift.web.pages import SAFE_TEXT, csrf_field, see_other, web_allow, web_form
from keyshift.web.render import page

router = APIRouter(include_in_schema=False)

FILTERS = ("q", "tenant", "region", "type", "state", "mode")


def _blank(value: str | None) -> str | None:
    return value if value else None


@router.get("/environments")
def environments_page(
    request: Request,
    view: str = Query("all", max_length=20),
    q: str | None = Query(None, max_length=200),
    tenant: str | None = Query(None, max_length=200),
    region: str | None = Query(None, max_length=100),
    type: str | None = Query(None, max_length=20),
    state: str | None = Query(None, max_length=20),
    mode: str | None = Query(None, max_length=20),
    after: str | None = Query(None, max_length=200),
    before: str | None = Query(None, max_length=200),
    ctx: Ctx = web_allow("collection"),
) -> Response:
    with_policies = view == "policies"
    raw = {"q": q, "tenant": tenant, "region": region, "type": type, "state": state, "mode": mode}
    given = {k: v.strip() for k, v in raw.items() if v and v.strip()}
    visible = _tenants(ctx)
    error: dict[str, str] | None = None
    status = 200
    result: dict[str, Any] = {"environments": [], "next_after": None, "prev_before": None}
    try:
        flt = env_search.EnvFilter(
            tenant_id=ctx.require_tenant(given["tenant"]) if "tenant" in given else None,
            q=given.get("q"),
            region=given.get("region"),
            type=given.get("type"),
            state=given.get("state"),
            mode=given.get("mode"),
            with_policies=with_policies,
        )
        result = env_search.search(
            ctx.rt, flt, scope_tenant=ctx.tenant_filter, after=_blank(after), before=_blank(before)
        )
    except KeyshiftError as err:
        error = {"code": err.code, "message": err.message}
        status = err.http_status
    base = {**given, **({"view": "policies"} if with_policies else {})}
    return page(
        request,
        "environments.html",
        status_code=status,
        rows=result["environments"],
        with_policies=with_policies,
        filters=given,
        error=error,
        tenants=visible,
        regions=list(ctx.rt.settings.regions),
        types=ENV_TYPES,
        states=env_search.STATES,
        modes=env_search.MODES,
        next_url=_url(base, after=result["next_after"]) if result["next_after"] else None,
        prev_url=_url(base, before=result["prev_before"]) if result["prev_before"] else None,
        first_url=_url(base) if (after or before) else None,
    )


def _url(params: dict[str, str], **cursor: str) -> str:
    query = urlencode({**params, **cursor})
    return "/environments" + (f"?{query}" if query else "")


def _tenants(ctx: Ctx) -> list[dict[str, Any]]:
    scope = ctx.tenant_filter
    return [t for t in tenants.list_tenants(ctx.rt) if scope is None or t.get("id") == scope]


@router.post("/environments")
def create_environment(
    request: Request,
    tenant: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    name: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    region: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    type: str = Form(..., max_length=20, pattern=SAFE_TEXT),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("collection"),
) -> Response:
    tid = ctx.require_tenant(tenant)
    view = environments.create_environment(ctx.rt, tid, name.strip(), region=region, env_type=type)
    return see_other(f"/environments/{view['id']}")


@router.post("/environments/{env}/features")
def enable_feature(
    request: Request,
    env: str,
    feature: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("env"),
) -> Response:
    view = environments.enable_feature(ctx.rt, env, feature)
    return see_other(f"/environments/{view['id']}")


@router.post("/environments/{env}/features/disable")
def disable_feature(
    request: Request,
    env: str,
    feature: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("env"),
) -> Response:
    view = env_features.disable_feature(ctx.rt, env, feature)
    return see_other(f"/environments/{view['id']}")


@router.post("/environments/{env}/restore")
def restore_before_migration(
    request: Request, env: str, csrf: str = csrf_field(), ctx: Ctx = web_form("env")
) -> Response:
    """Back to the pre-migration BYOK state within the restore window (a job; its page follows)."""
    from keyshift.migrate import restore

    job = restore.start_restore(ctx.rt, env)
    return see_other(f"/jobs/{job['id']}")


def environment_extras(ctx: Ctx, view: dict[str, Any]) -> dict[str, Any]:
    """What the environment page adds: the features that can be turned on, the restore window."""
    window = None
    until = view.get("restore_until")
    if until and view.get("migrated_from_byok_at") and view["encryption"]["mode"] == "cmk":
        left = int((parse_time(until) - ctx.rt.clock.now()).total_seconds())
        window = {
            "until": until,
            "migrated_at": view["migrated_from_byok_at"],
            "open": left > 0,
            "days": max(0, left) // 86400,
            "hours": (max(0, left) % 86400) // 3600,
            "retention_days": ctx.rt.settings.byok_retention_days,
        }
    return {
        "features_off": [f for f in FEATURES if f not in (view.get("features") or [])],
        "restore_window": window,
    }
