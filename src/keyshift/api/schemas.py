"""Request bodies. Unknown fields are refused (extra="forbid"), types are strict (a number is not a
string, "true" is not a boolean: 422, never coerced), every string has a length cap, and the document
states the rules the server enforces (name patterns, key types and sizes, ISO 8601 times, no control
characters) so a value that matches the schema is one the server accepts."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from keyshift.control.environments import FEATURES
from keyshift.control.vaults import SOFT_DELETE_MAX, SOFT_DELETE_MIN

MAX_VERSION = (1 << 63) - 1  # record versions are signed 64-bit integers (stores.record_codec)


def _no_control_chars(value: str) -> str:
    """Names and references never contain NUL, other control characters or lone surrogates."""
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("must not contain control characters or invalid Unicode")
    return value


# What the document states (JSON Schema patterns; the server's own checks give the clear refusal).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters
# Names of tenants, environments, vaults and policies (control.common.NAME_RE; never id-shaped).
NAME_PATTERN = r"^(?![a-z]{2,5}_[0-9a-f]{20}$)[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}$"  # vaults.local_frame.NAME_RE
TABLE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"  # stores.record_codec.TABLE_RE
FIELD_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,63}){0,3}$"  # search


def _text(max_length: int, pattern: str = TEXT_PATTERN, **schema: Any) -> Any:
    return Field(json_schema_extra={"pattern": pattern, **schema}, max_length=max_length, min_length=1)


Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_control_chars), _text(200)
]
Ref = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_no_control_chars),
    _text(200, description="A name or an id."),
]
Short = Annotated[
    str, StringConstraints(min_length=1, max_length=100), AfterValidator(_no_control_chars), _text(100)
]
Text = Annotated[Name, _text(200)]
ObjectName = Annotated[Name, _text(100, NAME_PATTERN)]
KeyName = Annotated[Name, _text(127, KEY_NAME_PATTERN)]
TableName = Annotated[Name, _text(128, TABLE_PATTERN)]
Version = Annotated[Short, _text(100)]


def _rfc3339(value: str) -> str:
    """An ISO 8601 date-time with a UTC offset (RFC 3339), e.g. 2026-01-31T12:00:00Z."""
    if not _TIME_SHAPE.match(value):
        raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2026-01-31T12:00:00Z")
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be a valid ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z") from None
    return value


_TIME_SHAPE = re.compile(r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,6})?([Zz]|[+-]\d\d:\d\d)\Z")
_TIME_SCHEMA = {"type": "string", "format": "date-time", "maxLength": 40}
IsoTime = Annotated[
    str, StringConstraints(max_length=40), AfterValidator(_rfc3339), WithJsonSchema(_TIME_SCHEMA)
]


def _time_or_never(value: str) -> str:
    return value if value == "never" else _rfc3339(value)


IsoTimeOrNever = Annotated[
    str,
    StringConstraints(max_length=40),
    AfterValidator(_time_or_never),
    WithJsonSchema({"anyOf": [_TIME_SCHEMA, {"type": "string", "enum": ["never"]}]}),
]


def _integral(value: Any) -> Any:
    """JSON has one number type: 2048.0 is the integer 2048 (JSON Schema agrees); 2048.5 and "2048"
    are still refused by the strict integer check that follows."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)  # on every integer field of a body: Annotated[int, Integral]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)


class TenantCreate(Body):
    name: ObjectName
    byok: bool = False


class ByokFlagRemove(Body):
    ticket: Text


class EnvironmentCreate(Body):
    tenant: Ref
    name: ObjectName
    region: Short | None = None  # the document lists the deployment's regions (api.openapi)
    type: Literal["production", "sandbox", "trial", "teams", "developer"] | None = None


class ManagedUpdate(Body):
    managed: bool


class FeatureEnable(Body):
    feature: Annotated[Short, Field(json_schema_extra={"enum": list(FEATURES)})]


class VaultCreate(Body):
    name: ObjectName
    soft_delete_days: Annotated[int, Field(ge=SOFT_DELETE_MIN, le=SOFT_DELETE_MAX), Integral] | None = None
    purge_protection: bool = False


class _KeyCreate(Body):
    name: KeyName
    expires: IsoTime | None = None
    not_before: IsoTime | None = None


class RsaKeyCreate(_KeyCreate):
    type: Literal["RSA"]
    size: Annotated[Literal[2048, 3072, 4096], Integral]


class AesKeyCreate(_KeyCreate):
    type: Literal["AES"]
    size: Annotated[Literal[256], Integral]


# The key types and sizes a vault creates (vaults.local_crypto: RSA 2048/3072/4096, AES 256).
KeyCreate = Annotated[RsaKeyCreate | AesKeyCreate, Field(discriminator="type")]


class KeyVersionSelector(Body):
    version: Version | None = None


class GrantCreate(Body):
    identity: Text
    permissions: list[Literal["get", "wrapKey", "unwrapKey"]] = Field(min_length=1, max_length=3)


class PolicyCreate(Body):
    tenant: Ref
    name: ObjectName
    region: Short  # the document lists the deployment's regions (api.openapi)
    vault: Ref
    key: Text
    key_version: Version | None = None


class PolicyUpdate(Body):
    key: Text
    key_version: Version | None = None


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
    expected_version: Annotated[int, Field(ge=0, le=MAX_VERSION), Integral] | None = None


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
