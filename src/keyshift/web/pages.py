"""Admin center pages: login, environments (incl. "Environments with policies"), the environment
encryption page, tenants with BYOK status. Policies and jobs live in pages_policies.py.

Every page is a route with its own `allow(...)` rule (the same guard as the REST API, with the
session cookie as the token source); every form POST checks the CSRF token.
"""

from __future__ import annotations

import importlib
import logging
import secrets
from typing import Any

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from keyshift.api.access import Ctx, Guard, Rule
from keyshift.control import environments, tenants, tokens
from keyshift.errors import AuthenticationError, KeyshiftError
from keyshift.web.flash import flash_redirect
from keyshift.web.render import HERE, page
from keyshift.web.session import (
    LOGIN_CSRF_COOKIE,
    MAX_AGE,
    SESSION_COOKIE,
    check_csrf,
    cookie_token,
    new_login_csrf,
    set_cookie,
)

log = logging.getLogger("keyshift.web")
# Form text fields that name things: no control characters (NUL never reaches a database).
SAFE_TEXT = r"^[^\x00-\x1f\x7f]*$"
router = APIRouter(include_in_schema=False)


class PageGuard(Guard):
    """The API guard reading the session cookie; keeps the Ctx on request.state for templates."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule, cookie_token)

    def __call__(self, request: Request) -> Ctx:
        ctx = super().__call__(request)
        request.state.web_ctx = ctx
        return ctx


def web_allow(scope: str, *, write: bool = False) -> Any:
    from fastapi import Depends

    return Depends(PageGuard(Rule(scope, write)))


class FormGuard(PageGuard):
    """PageGuard plus the CSRF check of the submitted form, before anything else.

    `ctx: Ctx = web_form("env")` authorizes like `web_allow("env", write=True)` and then checks the
    form's `csrf` field — before the other form fields are validated, so a form without its CSRF
    token always gets the documented `403 csrf_failed`, whatever else is wrong with it. Routes still
    declare `csrf` as a form field (`csrf_field()`) so the form's schema names it.
    """

    async def __call__(self, request: Request) -> Ctx:  # type: ignore[override]
        ctx = await run_in_threadpool(PageGuard.__call__, self, request)
        form = await request.form()
        presented = form.get("csrf")
        assert ctx.principal is not None
        check_csrf(request, ctx.principal.token_id, presented if isinstance(presented, str) else None)
        return ctx


def web_form(scope: str, *, write: bool = True) -> Any:
    """The guard of a form POST: authorization (a write by default), then the CSRF token."""
    from fastapi import Depends

    return Depends(FormGuard(Rule(scope, write)))


def csrf_field() -> Any:
    return Form("", alias="csrf", max_length=128)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- login -----------------------------------------------------------------------------------------
@router.get("/login")
def login_form(request: Request, ctx: Ctx = web_allow("public")) -> Response:
    value = new_login_csrf()
    response = page(request, "login.html", login_csrf=value, failed=request.query_params.get("failed"))
    set_cookie(response, request, LOGIN_CSRF_COOKIE, value, 600)
    return response


@router.post("/login")
def login(
    request: Request,
    token: str = Form(..., max_length=300),
    login_csrf: str = Form(..., max_length=100),
    ctx: Ctx = web_allow("public"),
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, login_csrf):
        return see_other("/login?failed=expired")
    try:
        principal = tokens.authenticate(request.app.state.runtime, token.strip())
    except AuthenticationError:
        return see_other("/login?failed=1")
    if principal.role == "service":
        return see_other("/login?failed=1")
    response = see_other("/")
    set_cookie(response, request, SESSION_COOKIE, token.strip(), MAX_AGE)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(
    request: Request,
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("authenticated", write=False),
) -> Response:
    response = see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(ctx: Ctx = web_allow("authenticated")) -> Response:
    return see_other("/environments")


# -- environments ----------------------------------------------------------------------------------
# The environment list (filters, pagination) and its forms: pages_environments.py.
@router.get("/environments/{env}")
def environment_page(request: Request, env: str, ctx: Ctx = web_allow("env")) -> Response:
    from keyshift.web.pages_environments import environment_extras

    view = environments.show_environment(ctx.rt, env)
    extras = environment_extras(ctx, view)
    return page(request, "environment.html", env=view, can_reenable=_reenable() is not None, **extras)


@router.post("/environments/{env}/managed")
def environment_managed(
    request: Request,
    env: str,
    managed: bool = Form(...),
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("env"),
) -> Response:
    view = environments.set_managed(ctx.rt, env, managed)
    state = "is now a managed environment" if view["managed"] else "is no longer a managed environment"
    return flash_redirect(request, f"/environments/{view['id']}", f"{view['name']} {state}.")


def _reenable() -> Any:
    """The revocation part's re-enable service (None in a build without it)."""
    try:
        from keyshift.control.revocation import reenable_environment
    except ImportError:
        return None
    return reenable_environment


@router.post("/environments/{env}/re-enable")
def environment_reenable(
    request: Request,
    env: str,
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("env"),
) -> Response:
    fn = _reenable()
    if fn is None:
        raise KeyshiftError("re-enable is not available in this build")
    view = fn(ctx.rt, env)
    target = (view.get("environment") or {}).get("id", env)
    return flash_redirect(request, f"/environments/{target}", "Environment re-enabled.")


# -- tenants ---------------------------------------------------------------------------------------
@router.get("/tenants")
def tenants_page(request: Request, ctx: Ctx = web_allow("collection")) -> Response:
    scope = ctx.tenant_filter
    rows = [t for t in tenants.list_tenants(ctx.rt) if scope is None or t.get("id") == scope]
    return page(request, "tenants.html", rows=rows)


@router.get("/tenants/{tenant}")
def tenant_page(request: Request, tenant: str, ctx: Ctx = web_allow("tenant")) -> Response:
    view = tenants.show_tenant(ctx.rt, tenant)
    countdown = None
    vault = view.get("byok_vault") or {}
    if vault.get("delete_after"):
        from keyshift.clock import parse_time

        left = parse_time(vault["delete_after"]) - ctx.rt.clock.now()
        seconds = max(0, int(left.total_seconds()))
        countdown = {"days": seconds // 86400, "hours": (seconds % 86400) // 3600, "seconds": seconds}
    from keyshift.web.pages_tenants import tenant_extras

    return page(request, "tenant.html", tenant=view, countdown=countdown, **tenant_extras(ctx, view))


@router.post("/tenants/{tenant}/byok-flag/remove")
def tenant_remove_byok_flag(
    request: Request,
    tenant: str,
    ticket: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    csrf_token: str = Form(..., alias="csrf", max_length=128),
    ctx: Ctx = web_form("operator"),
) -> Response:
    """Operator only: turn the tenant's legacy BYOK feature off, recording the ticket reference."""
    view = tenants.byok_flag_remove(ctx.rt, tenant, ticket=ticket)
    return flash_redirect(request, f"/tenants/{view['id']}", f"BYOK feature turned off (ticket {ticket}).")


def install(app: FastAPI) -> None:
    from keyshift.web.render import html_error

    app.state.web_secret = secrets.token_bytes(32)
    app.state.html_error = html_error
    app.include_router(router)
    for name in (
        "keyshift.web.pages_jobs",
        "keyshift.web.pages_policies",
        "keyshift.web.pages_coverage",
        "keyshift.web.pages_vaults",
        "keyshift.web.pages_tokens",
        "keyshift.web.pages_environments",
        "keyshift.web.pages_tenants",
        "keyshift.web.pages_audit",
    ):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            missing = exc.name or ""
            if not missing.startswith("keyshift.") or missing.startswith("keyshift.web"):
                raise
            log.warning("pages %s left out: %s is not available", name, missing)
            continue
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")


__all__ = ["KeyshiftError", "install", "router"]
