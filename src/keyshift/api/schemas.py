"""Request bodies. Unknown fields are refused (extra="forbid"); every string has a length cap."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Short = Annotated[str, StringConstraints(min_length=1, max_length=100)]


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


class RecordPut(Body):
    value: Any = Field(description="Any JSON value.")
    expected_version: int | None = Field(default=None, ge=0)


class AuditAppend(Body):
    event: dict[str, Any]
