"""Admin center: creating a tenant (operator), the tenant page's environments and the legacy BYOK
actions (operator): generate a key (downloaded once as password-protected PKCS#12, never stored as a
file on the server), import one (upload), activate, lock the tenant with the active key's file,
unlock. Every action goes through the service layer, which checks the rules and audits it."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import Response

from keyshift.api.access import Ctx
from keyshift.control import byok, byok_lock, env_search, tenants
from keyshift.control.environments import ENV_TYPES
from keyshift.control.pkcs12_files import MAX_FILE_BYTES
from keyshift.web.pages import SAFE_TEXT, csrf_field, see_other, web_form
from keyshift.web.render import SECURITY_HEADERS

router = APIRouter(include_in_schema=False)
TENANT_ENV_ROWS = 50


@router.post("/tenants")
def create_tenant(
    request: Request,
    name: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    byok_tenant: bool = Form(False, alias="byok"),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("operator"),
) -> Response:
    view = tenants.create_tenant(ctx.rt, name.strip(), byok=byok_tenant)
    return see_other(f"/tenants/{view['id']}")


def tenant_extras(ctx: Ctx, view: dict[str, Any]) -> dict[str, Any]:
    """The tenant page's environments (first page, with a link to the filtered list) and the lists
    its forms need."""
    page = env_search.search(
        ctx.rt,
        env_search.EnvFilter(tenant_id=view["id"]),
        scope_tenant=ctx.tenant_filter,
        limit=TENANT_ENV_ROWS,
    )
    return {
        "tenant_envs": page["environments"],
        "tenant_envs_more": page["next_after"] is not None,
        "regions": list(ctx.rt.settings.regions),
        "types": ENV_TYPES,
        "tenants": [{"id": view["id"], "name": view["name"]}],
    }


async def _read_upload(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_FILE_BYTES + 1)
    await upload.close()
    return data


@router.post("/tenants/{tenant}/byok/keys/generate")
def generate_key(
    request: Request,
    tenant: str,
    name: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    region: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    password: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("tenant"),
) -> Response:
    """The new key's PKCS#12 file is the response (a download); the tenant page lists the key."""
    view, data = byok.generate_pkcs12(ctx.rt, tenant, name.strip(), password=password, region=region)
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", f"{view['name']}.pfx")
    headers = {
        **SECURITY_HEADERS,
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    return Response(data, media_type="application/x-pkcs12", headers=headers)


@router.post("/tenants/{tenant}/byok/keys/import")
async def import_key(
    request: Request,
    tenant: str,
    name: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    region: str = Form(..., max_length=100, pattern=SAFE_TEXT),
    password: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    file: UploadFile = File(...),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("tenant"),
) -> Response:
    from starlette.concurrency import run_in_threadpool

    data = await _read_upload(file)
    await run_in_threadpool(
        byok.import_pkcs12, ctx.rt, tenant, name.strip(), data=data, password=password, region=region
    )
    return see_other(f"/tenants/{tenant}")


@router.post("/tenants/{tenant}/byok/keys/{key}/activate")
def activate_key(
    request: Request, tenant: str, key: str, csrf: str = csrf_field(), ctx: Ctx = web_form("tenant")
) -> Response:
    byok.activate(ctx.rt, tenant, key)
    return see_other(f"/tenants/{tenant}")


@router.post("/tenants/{tenant}/byok/lock")
async def lock_tenant(
    request: Request,
    tenant: str,
    password: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    confirm: str = Form(..., max_length=200, pattern=SAFE_TEXT),
    file: UploadFile = File(...),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("tenant"),
) -> Response:
    """Needs the active key's file, its password and the tenant's name typed (docs/CONCEPTS.md)."""
    from starlette.concurrency import run_in_threadpool

    data = await _read_upload(file)
    await run_in_threadpool(
        byok_lock.lock_pkcs12, ctx.rt, tenant, data=data, password=password, confirm=confirm
    )
    return see_other(f"/tenants/{tenant}")


@router.post("/tenants/{tenant}/byok/unlock")
def unlock_tenant(
    request: Request,
    tenant: str,
    environment: str = Form("", max_length=200, pattern=SAFE_TEXT),
    csrf: str = csrf_field(),
    ctx: Ctx = web_form("tenant"),
) -> Response:
    """Unlock every locked environment (or the one named) after the same key was re-imported and
    activated."""
    if environment:
        ctx.require_env(environment)
    byok_lock.unlock(ctx.rt, tenant, environment or None)
    return see_other(f"/tenants/{tenant}")
