"""Admin center: vaults and their keys — list and show vaults (kind, soft delete, purge protection,
reachability as the readiness probe sees it, checked in parallel
and bounded in time: `web.vault_checks`), create / rotate / enable / disable keys, key versions,
and granting or revoking a policy identity's get / wrapKey / unwrapKey on a key.

Access follows the API exactly: reading needs the `vault` scope (a tenant admin or tenant reader
sees only the customer vaults registered for its tenant; platform vaults are the operator's), every
change needs it with write, and every change goes through control.vaults, which audits it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.control import policies, vaults
from keyshift.vaults.local_crypto import AES_SIZES, RSA_SIZES
from keyshift.web.flash import flash_redirect
from keyshift.web.pages import SAFE_TEXT, web_allow, web_form
from keyshift.web.render import page
from keyshift.web.vault_checks import vault_checks

router = APIRouter(include_in_schema=False)

PERMISSIONS = ("get", "wrapKey", "unwrapKey")
# A missing CSRF field is the same 403 csrf_failed as a wrong one (not a 422).
Csrf = Annotated[str, Form(alias="csrf", max_length=128)]
Version = Annotated[str, Form(max_length=100, pattern=SAFE_TEXT)]


def visible_vaults(ctx: Ctx) -> list[dict[str, Any]]:
    """The vaults the caller may see — the same filter as `GET /api/v1/vaults`."""
    rows = vaults.list_vaults(ctx.rt)
    scope = ctx.tenant_filter
    if scope is None:
        return rows
    return [r for r in rows if (r.get("tenant") or {}).get("id") == scope and r.get("owner") == "customer"]


def can_change(ctx: Ctx) -> bool:
    """Roles that may change a vault they can see (the page's own guard already scoped the vault)."""
    return ctx.principal is not None and ctx.principal.role in ("operator", "tenant_admin")


def _reachability(ctx: Ctx, names: list[str]) -> dict[str, dict[str, Any]]:
    """Whether this server reaches each vault now: checked in parallel, the page waiting at most
    a couple of seconds (a vault that has not answered shows as pending), answers cached briefly
    (`web.vault_checks`)."""
    return vault_checks.reachability(ctx.rt, names)


def _key_url(vault: str, key: str) -> str:
    from urllib.parse import quote

    return f"/vaults/{quote(vault, safe='')}/keys/{quote(key, safe='')}"


@router.get("/vaults")
def vaults_page(request: Request, ctx: Ctx = web_allow("collection")) -> Response:
    rows = visible_vaults(ctx)
    reach = _reachability(ctx, [v["name"] for v in rows])
    rows = [dict(v, reachability=reach[v["name"]]) for v in rows]
    return page(request, "vaults.html", rows=rows)


@router.get("/vaults/{vault}")
def vault_page(request: Request, vault: str, ctx: Ctx = web_allow("vault")) -> Response:
    view = vaults.show_vault(ctx.rt, vault)
    return page(
        request,
        "vault.html",
        vault=view,
        reachability=_reachability(ctx, [view["name"]])[view["name"]],
        can_change=can_change(ctx) and view["key_management"],
        sizes={"RSA": RSA_SIZES, "AES": AES_SIZES},
    )


@router.post("/vaults/{vault}/keys")
def create_key(
    request: Request,
    vault: str,
    name: Annotated[str, Form(max_length=100, pattern=SAFE_TEXT)],
    key_type: Annotated[str, Form(alias="type", max_length=10, pattern="^(RSA|AES)$")],
    size: Annotated[int, Form(ge=1, le=16384)],
    csrf_token: Csrf = "",
    ctx: Ctx = web_form("vault"),
) -> Response:
    view = vaults.create_key(ctx.rt, vault, name, key_type, size)
    return flash_redirect(
        request,
        _key_url(view["vault"]["name"], view["name"]),
        f"Key {view['name']} created ({view['type']} {view['size']}, version {view['current_version']}).",
    )


@router.get("/vaults/{vault}/keys/{key}")
def key_page(
    request: Request,
    vault: str,
    key: str,
    identity: Annotated[str | None, Query(max_length=200, pattern=SAFE_TEXT)] = None,
    ctx: Ctx = web_allow("vault"),
) -> Response:
    view = vaults.show_key(ctx.rt, vault, key)
    using = [
        p
        for p in policies.list_policies(ctx.rt, tenant=ctx.tenant_filter)
        if p["vault"]["id"] == view["vault"]["id"] and p["key"] == view["name"]
    ]
    return page(
        request,
        "key.html",
        key=view,
        policies=using,
        identity=identity or "",
        permissions=PERMISSIONS,
        can_change=can_change(ctx),
    )


@router.post("/vaults/{vault}/keys/{key}/rotate")
def rotate_key(
    request: Request, vault: str, key: str, csrf_token: Csrf = "", ctx: Ctx = web_form("vault")
) -> Response:
    view = vaults.rotate_key(ctx.rt, vault, key)
    msg = f"Key {view['name']} rotated: the current version is now {view['current_version']}."
    return flash_redirect(request, _key_url(view["vault"]["name"], view["name"]), msg)


def _set_enabled(request: Request, ctx: Ctx, vault: str, key: str, enabled: bool, version: str) -> Response:
    view = vaults.set_key_enabled(ctx.rt, vault, key, enabled, version=version or None)
    what = f"Version {version} of key {view['name']}" if version else f"Key {view['name']}"
    msg = f"{what} {'enabled' if enabled else 'disabled'}."
    return flash_redirect(request, _key_url(view["vault"]["name"], view["name"]), msg)


@router.post("/vaults/{vault}/keys/{key}/enable")
def enable_key(
    request: Request,
    vault: str,
    key: str,
    version: Version = "",
    csrf_token: Csrf = "",
    ctx: Ctx = web_form("vault"),
) -> Response:
    return _set_enabled(request, ctx, vault, key, True, version)


@router.post("/vaults/{vault}/keys/{key}/disable")
def disable_key(
    request: Request,
    vault: str,
    key: str,
    version: Version = "",
    csrf_token: Csrf = "",
    ctx: Ctx = web_form("vault"),
) -> Response:
    """Refused with key_in_use while the key (version) still covers data (no force from the page)."""
    return _set_enabled(request, ctx, vault, key, False, version)


@router.post("/vaults/{vault}/keys/{key}/grants")
def grant(
    request: Request,
    vault: str,
    key: str,
    identity: Annotated[str, Form(max_length=200, pattern=SAFE_TEXT)],
    permissions: Annotated[list[str] | None, Form(max_length=3)] = None,
    csrf_token: Csrf = "",
    ctx: Ctx = web_form("vault"),
) -> Response:
    # The service refuses (and audits) an empty set or an unknown permission with a clear error.
    view = vaults.grant_key(ctx.rt, vault, key, identity, ",".join(permissions or []))
    msg = f"Granted {', '.join(view['permissions'])} on key {view['name']} to {view['identity']}."
    return flash_redirect(request, _key_url(view["vault"]["name"], view["name"]), msg)


@router.post("/vaults/{vault}/keys/{key}/grants/revoke")
def revoke_grant(
    request: Request,
    vault: str,
    key: str,
    identity: Annotated[str, Form(max_length=200, pattern=SAFE_TEXT)],
    csrf_token: Csrf = "",
    ctx: Ctx = web_form("vault"),
) -> Response:
    """Refused with key_in_use while the identity's policy covers data (no force from the page)."""
    view = vaults.revoke_key_grant(ctx.rt, vault, key, identity)
    msg = f"Revoked the grant of {view['identity']} on key {view['name']}."
    return flash_redirect(request, _key_url(view["vault"]["name"], key), msg)
