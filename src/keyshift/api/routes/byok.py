"""Legacy BYOK over the API: a tenant's keys (list; generate, import, activate), tenant lock and
unlock — the services behind `keyshift byok ...`. Changing them is the operator's (tenants are
read-only for their admins); PKCS#12 content travels base64-encoded and is never stored as a file.
Turning an environment's feature off is here too (`DELETE .../features/{feature}`)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, StringConstraints

from keyshift.api.access import Ctx, allow
from keyshift.api.schemas import Body, Name, ObjectName, Short
from keyshift.control import byok, byok_lock, env_features
from keyshift.control.pkcs12_files import MAX_FILE_BYTES
from keyshift.errors import UsageError

router = APIRouter(tags=["byok"])

# Base64 of at most MAX_FILE_BYTES bytes.
Pkcs12 = Annotated[
    str,
    StringConstraints(min_length=4, max_length=(MAX_FILE_BYTES * 4) // 3 + 4, pattern=r"^[A-Za-z0-9+/=]+$"),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
# a password that protects a new PKCS#12 file: at least 8 characters (the service's rule)
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ByokKeyView(BaseModel):
    id: str
    name: str
    region: str
    state: str = Field(description="available, installing, active or deleted")
    source: str = Field(description="generated or imported")
    fingerprint: str | None = Field(description="SHA-256 of the public key (hex)")
    activated_at: str | None
    created_at: str | None


class ByokKeyGenerate(Body):
    name: ObjectName
    region: Short | None = None
    password: NewPassword = Field(description="protects the returned PKCS#12 (at least 8 characters)")


class ByokKeyGenerated(BaseModel):
    key: ByokKeyView
    pkcs12: str = Field(description="the new key as password-protected PKCS#12, base64; returned once")


class ByokKeyImport(Body):
    name: ObjectName
    region: Short | None = None
    password: Password
    pkcs12: Pkcs12 = Field(description="the PKCS#12 file's content, base64")


class ByokLock(Body):
    pkcs12: Pkcs12 = Field(description="the active key's PKCS#12 file, base64")
    password: Password
    confirm: Name = Field(description="the tenant's name, typed")


class ByokUnlock(Body):
    environment: Name | None = Field(default=None, description="one locked environment; default all")


class ByokLockResult(BaseModel):
    tenant: str
    locked_at: str
    environments_locked: list[str]
    keys_deleted: int
    key_deletion_failures: list[str]


class ByokUnlockResult(BaseModel):
    tenant: str
    unlocked: list[str]
    still_locked: int
    tenant_locked: bool


class Ref(BaseModel):
    id: str
    name: str


class EnvironmentFeatures(BaseModel):
    environment: Ref
    features: list[str]


def _decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("pkcs12 is not valid base64", code="invalid_argument") from None


@router.get("/tenants/{tenant}/byok/keys", response_model=list[ByokKeyView], operation_id="byok_keys_list")
def list_keys(tenant: str, ctx: Ctx = allow("tenant")) -> list[dict[str, Any]]:
    return byok.list_keys(ctx.rt, tenant)


@router.post(
    "/tenants/{tenant}/byok/keys/generate",
    status_code=201,
    response_model=ByokKeyGenerated,
    operation_id="byok_keys_generate",
)
def generate_key(
    tenant: str, body: ByokKeyGenerate, ctx: Ctx = allow("tenant", write=True)
) -> dict[str, Any]:
    view, data = byok.generate_pkcs12(ctx.rt, tenant, body.name, password=body.password, region=body.region)
    return {"key": view, "pkcs12": base64.b64encode(data).decode("ascii")}


@router.post(
    "/tenants/{tenant}/byok/keys/import",
    status_code=201,
    response_model=ByokKeyView,
    operation_id="byok_keys_import",
)
def import_key(tenant: str, body: ByokKeyImport, ctx: Ctx = allow("tenant", write=True)) -> dict[str, Any]:
    data = _decode(body.pkcs12)
    return byok.import_pkcs12(
        ctx.rt, tenant, body.name, data=data, password=body.password, region=body.region
    )


@router.post(
    "/tenants/{tenant}/byok/keys/{key}/activate",
    response_model=ByokKeyView,
    operation_id="byok_keys_activate",
)
def activate_key(
    tenant: str, key: str = Path(max_length=200), ctx: Ctx = allow("tenant", write=True)
) -> dict[str, Any]:
    return byok.activate(ctx.rt, tenant, key)


@router.post("/tenants/{tenant}/byok/lock", response_model=ByokLockResult, operation_id="byok_lock")
def lock(tenant: str, body: ByokLock, ctx: Ctx = allow("tenant", write=True)) -> dict[str, Any]:
    data = _decode(body.pkcs12)
    return byok_lock.lock_pkcs12(ctx.rt, tenant, data=data, password=body.password, confirm=body.confirm)


@router.post("/tenants/{tenant}/byok/unlock", response_model=ByokUnlockResult, operation_id="byok_unlock")
def unlock(tenant: str, body: ByokUnlock, ctx: Ctx = allow("tenant", write=True)) -> dict[str, Any]:
    if body.environment is not None:
        ctx.require_env(body.environment)
    return byok_lock.unlock(ctx.rt, tenant, body.environment)


@router.delete(
    "/environments/{env}/features/{feature}",
    response_model=EnvironmentFeatures,
    operation_id="environments_features_disable",
)
def disable_feature(
    env: str, feature: str = Path(max_length=100), ctx: Ctx = allow("env", write=True)
) -> dict[str, Any]:
    """Turn a feature off; its stored data is kept (encrypted) for when it is turned on again."""
    view = env_features.disable_feature(ctx.rt, env, feature)
    return {"environment": {"id": view["id"], "name": view["name"]}, "features": view["features"]}
