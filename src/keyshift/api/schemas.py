"""Request bodies. Unknown fields are refused (extra="forbid"); every string has a length cap."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_VERSION = (1 << 63) - 1  # record versions are signed 64-bit integers (stores.record_codec)


def _no_control_chars(value: str) -> str:
    """Names and references never contain NUL, other control characters or lone surrogates."""
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("must not contain control characters or invalid Unicode")
    return value


Name = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_control_chars)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_control_chars)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_control_chars)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class TenantCreate(Body):
    name: Name
    byok: bool = False


class ByokFlagRemove(Body):
    ticket: Name


class EnvironmentCreate(Body):
    tenant: Ref
    name: Name
    region: Short | None = None
    type: Literal["production", "sandbox", "trial", "teams", "developer"] | None = None


class ManagedUpdate(Body):
    managed: bool


class FeatureEnable(Body):
    feature: Short


class VaultCreate(Body):
    name: Name
    soft_delete_days: int | None = Field(default=None, ge=0, le=3650)
    purge_protection: bool = False


class KeyCreate(Body):
    name: Name
    type: Literal["RSA", "AES"]
    size: int = Field(ge=1, le=16384)
    expires: Short | None = None
    not_before: Short | None = None


class KeyVersionSelector(Body):
    version: Short | None = None


class GrantCreate(Body):
    identity: Name
    permissions: list[Literal["get", "wrapKey", "unwrapKey"]] = Field(min_length=1, max_length=3)


class PolicyCreate(Body):
    tenant: Ref
    name: Name
    region: Short
    vault: Ref
    key: Name
    key_version: Short | None = None


class PolicyUpdate(Body):
    key: Name
    key_version: Short | None = None


class PolicyEnvironment(Body):
    environment: Ref
    reencrypt: bool = False


class SwapEnvironment(Body):
    environment: Ref


class ReEnable(Body):
    confirm: bool = True


def _valid_unicode(value: Any) -> Any:
    """JSON values must be encodable as UTF-8: refuse lone surrogates anywhere inside."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                raise ValueError("contains invalid Unicode (a lone surrogate)")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


JsonValue = Annotated[Any, AfterValidator(_valid_unicode)]


class RecordPut(Body):
    value: JsonValue = Field(description="Any JSON value.")
    expected_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)


class AuditAppend(Body):
    event: Annotated[dict[str, Any], AfterValidator(_valid_unicode)]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. environment_not_found.")
    message: str = Field(description="Human-readable explanation; never contains key material.")


class ErrorBody(BaseModel):
    error: ErrorDetail


_ERROR_MEANINGS = {
    400: "Malformed request (bad JSON, invalid value)",
    401: "Not authenticated (the same answer for every kind of bad token)",
    403: "The caller's role may not do this",
    404: "No such object (or not visible to the caller)",
    409: "Precondition failed or conflict with the current state",
    413: "Request body too large",
    422: "Request does not match the schema (wrong types, unknown fields, missing fields)",
    423: "The environment is disabled or locked",
    424: "The key is inaccessible",
    503: "The key vault is unavailable (retry later)",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERROR_MEANINGS.items()
}
