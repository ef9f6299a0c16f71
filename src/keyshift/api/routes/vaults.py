"""Vaults and keys (local vault; key routes work on any vault whose adapter manages keys).

A tenant admin's vaults are the customer vaults registered for its tenant; vaults it creates are
registered for its tenant. Platform-owned vaults (the platform key, legacy BYOK vaults) are the
operator's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from keyshift.api.access import Ctx, allow
from keyshift.api.models.vault import Key, KeyGrant, KeyGrantRevoked, KeyPurged, Vault, VaultDetail
from keyshift.api.schemas import (
    Body,
    GrantCreate,
    IsoTimeOrNever,
    KeyCreate,
    KeyVersionSelector,
    Ref,
    Short,
    VaultCreate,
)
from keyshift.clock import parse_time
from keyshift.control import vaults

router = APIRouter(tags=["vaults and keys"])


class VaultCreateForTenant(VaultCreate):
    tenant: Ref | None = None


@router.get("/vaults", response_model=list[Vault])
def list_vaults(ctx: Ctx = allow("collection")) -> list[dict[str, Any]]:
    rows = vaults.list_vaults(ctx.rt)
    scope = ctx.tenant_filter
    if scope is None:
        return rows
    return [r for r in rows if (r.get("tenant") or {}).get("id") == scope and r.get("owner") == "customer"]


@router.post("/vaults", response_model=Vault, status_code=status.HTTP_201_CREATED)
def create_vault(body: VaultCreateForTenant, ctx: Ctx = allow("collection", write=True)) -> dict[str, Any]:
    """Create a local vault (registered for the caller's tenant, or `tenant` when an operator asks)."""
    if body.tenant is not None:
        tenant_id: str | None = ctx.require_tenant(body.tenant)
    else:
        tenant_id = ctx.tenant_filter
    return vaults.create_local_vault(
        ctx.rt,
        body.name,
        soft_delete_days=90 if body.soft_delete_days is None else body.soft_delete_days,
        purge_protection=body.purge_protection,
        tenant_id=tenant_id,
    )


@router.get("/vaults/{vault}", response_model=VaultDetail)
def show_vault(vault: str, ctx: Ctx = allow("vault")) -> dict[str, Any]:
    return vaults.show_vault(ctx.rt, vault)


@router.get("/vaults/{vault}/keys", response_model=list[Key])
def list_keys(vault: str, ctx: Ctx = allow("vault")) -> list[dict[str, Any]]:
    return vaults.list_keys(ctx.rt, vault)


def _time(value: str | None) -> Any:
    return parse_time(value) if value is not None else None


@router.post("/vaults/{vault}/keys", response_model=Key, status_code=status.HTTP_201_CREATED)
def create_key(vault: str, body: KeyCreate, ctx: Ctx = allow("vault", write=True)) -> dict[str, Any]:
    return vaults.create_key(
        ctx.rt,
        vault,
        body.name,
        body.type,
        body.size,
        not_before=_time(body.not_before),
        expires=_time(body.expires),
    )


@router.get("/vaults/{vault}/keys/{key}", response_model=Key)
def show_key(vault: str, key: str, ctx: Ctx = allow("vault")) -> dict[str, Any]:
    return vaults.show_key(ctx.rt, vault, key)


@router.post("/vaults/{vault}/keys/{key}/rotate", response_model=Key)
def rotate_key(vault: str, key: str, ctx: Ctx = allow("vault", write=True)) -> dict[str, Any]:
    return vaults.rotate_key(ctx.rt, vault, key)


class KeyUpdate(Body):
    expires: IsoTimeOrNever  # ISO 8601, or "never" to clear the expiry
    version: Short | None = None


@router.patch("/vaults/{vault}/keys/{key}", response_model=Key)
def update_key(
    vault: str, key: str, body: KeyUpdate, ctx: Ctx = allow("vault", write=True)
) -> dict[str, Any]:
    """Extend, shorten or clear (`"never"`) the expiry of a key version (default: the current one)."""
    from keyshift.control.key_expiry import update_key_expiry

    return update_key_expiry(ctx.rt, vault, key, body.expires, version=body.version)


@router.post("/vaults/{vault}/keys/{key}/disable", response_model=Key)
def disable_key(
    vault: str,
    key: str,
    body: KeyVersionSelector | None = None,
    force: bool = False,
    ctx: Ctx = allow("vault", write=True),
) -> dict[str, Any]:
    """Refused with `key_in_use` (409) while the key (version) covers data, unless `?force=true`."""
    version = body.version if body else None
    return vaults.set_key_enabled(ctx.rt, vault, key, False, version=version, force=force)


@router.post("/vaults/{vault}/keys/{key}/enable", response_model=Key)
def enable_key(
    vault: str, key: str, body: KeyVersionSelector | None = None, ctx: Ctx = allow("vault", write=True)
) -> dict[str, Any]:
    return vaults.set_key_enabled(ctx.rt, vault, key, True, version=body.version if body else None)


@router.delete("/vaults/{vault}/keys/{key}", response_model=Key)
def delete_key(
    vault: str, key: str, force: bool = False, ctx: Ctx = allow("vault", write=True)
) -> dict[str, Any]:
    """Soft delete (recoverable within the vault's retention); gated like disable."""
    return vaults.delete_key(ctx.rt, vault, key, force=force)


@router.post("/vaults/{vault}/keys/{key}/recover", response_model=Key)
def recover_key(vault: str, key: str, ctx: Ctx = allow("vault", write=True)) -> dict[str, Any]:
    return vaults.recover_key(ctx.rt, vault, key)


@router.post("/vaults/{vault}/keys/{key}/purge", response_model=KeyPurged)
def purge_key(
    vault: str, key: str, force: bool = False, ctx: Ctx = allow("vault", write=True)
) -> dict[str, Any]:
    return vaults.purge_key(ctx.rt, vault, key, force=force)


@router.post("/vaults/{vault}/keys/{key}/grants", response_model=KeyGrant)
def grant(vault: str, key: str, body: GrantCreate, ctx: Ctx = allow("vault", write=True)) -> dict[str, Any]:
    return vaults.grant_key(ctx.rt, vault, key, body.identity, ",".join(body.permissions))


@router.delete("/vaults/{vault}/keys/{key}/grants/{identity}", response_model=KeyGrantRevoked)
def revoke_grant(
    vault: str, key: str, identity: str, force: bool = False, ctx: Ctx = allow("vault", write=True)
) -> dict[str, Any]:
    return vaults.revoke_key_grant(ctx.rt, vault, key, identity, force=force)
