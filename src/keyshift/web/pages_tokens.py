"""Admin center: API tokens (operator only, like `keyshift token ...` and `/api/v1/tokens`).

Create shows the token string once, in the answer to the form post itself (never stored, never in
a URL, a cookie or a later page); the list shows ids, roles, tenants and states only; revoke stops
a token at once. Every change goes through control.tokens, which audits it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.control import environments, tenants, token_admin, tokens
from keyshift.web.flash import flash_redirect
from keyshift.web.pages import SAFE_TEXT, web_allow, web_form
from keyshift.web.render import page

router = APIRouter(include_in_schema=False)

ROLE = "^(operator|tenant_admin|service|reader)$"
# A missing CSRF field is the same 403 csrf_failed as a wrong one (not a 422).
Csrf = Annotated[str, Form(alias="csrf", max_length=128)]


def _tokens_page(
    request: Request,
    ctx: Ctx,
    *,
    role: str | None = None,
    tenant: str | None = None,
    state: str | None = None,
    created: dict[str, object] | None = None,
    status_code: int = 200,
) -> Response:
    rows = token_admin.list_token_views(ctx.rt, role=role, tenant=tenant, state=state)
    return page(
        request,
        "tokens.html",
        status_code=status_code,
        rows=rows,
        roles=tokens.ROLES,
        tenants=tenants.list_tenants(ctx.rt),
        environments=environments.list_environments(ctx.rt),
        filters={"role": role or "", "tenant": tenant or "", "state": state or ""},
        created=created,
    )


@router.get("/tokens")
def tokens_page(
    request: Request,
    role: Annotated[str | None, Query(max_length=20, pattern=f"{ROLE}|^$")] = None,
    tenant: Annotated[str | None, Query(max_length=200, pattern=SAFE_TEXT)] = None,
    state: Annotated[str | None, Query(max_length=10, pattern="^(active|revoked|)$")] = None,
    ctx: Ctx = web_allow("operator"),
) -> Response:
    return _tokens_page(request, ctx, role=role or None, tenant=tenant or None, state=state or None)


@router.post("/tokens")
def create_token(
    request: Request,
    role: Annotated[str, Form(max_length=20, pattern=ROLE)],
    tenant: Annotated[str, Form(max_length=200, pattern=SAFE_TEXT)] = "",
    environment: Annotated[list[str] | None, Form(max_length=100)] = None,
    label: Annotated[str, Form(max_length=200, pattern=SAFE_TEXT)] = "",
    csrf_token: Csrf = "",
    ctx: Ctx = web_form("operator"),
) -> Response:
    envs = [e for e in (environment or []) if e]
    view = token_admin.create_token_view(ctx.rt, role, tenant=tenant or None, envs=envs, label=label or None)
    return _tokens_page(request, ctx, created=view, status_code=201)


@router.post("/tokens/{token}/revoke")
def revoke_token(
    request: Request, token: str, csrf_token: Csrf = "", ctx: Ctx = web_form("operator")
) -> Response:
    view = token_admin.revoke_token_view(ctx.rt, token)
    return flash_redirect(request, "/tokens", f"Token {view['id']} revoked; it no longer works.")
