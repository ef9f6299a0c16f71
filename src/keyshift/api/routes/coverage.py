"""Key coverage and retirement: what a key version still covers, per key and per environment, and
`retire` (start the rewrap jobs that move environments off a version)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from keyshift.api.access import Ctx, allow
from keyshift.api.models.coverage import EnvironmentCoverage, KeyCoverage, Retirement
from keyshift.api.models.policy import Rotation
from keyshift.api.schemas import Body, Integral, Short
from keyshift.control import coverage, lifecycle, retire

router = APIRouter(tags=["key coverage"])


class RetireRequest(Body):
    version: Short


class RotationRequest(Body):
    days: Annotated[int, Field(ge=1, le=3650), Integral] | None


@router.get("/vaults/{vault}/keys/{key}/coverage", response_model=KeyCoverage)
def key_coverage(
    vault: str,
    key: str,
    version: Annotated[str | None, Query(max_length=100)] = None,
    ctx: Ctx = allow("vault"),
) -> dict[str, Any]:
    """Per key version: tenants, environments, stores, data keys, rows, events, files, search
    indexes, lake exports and backups that depend on it (counts and bytes), retained windows."""
    return coverage.key_coverage(ctx.rt, vault, key, version=version)


@router.post("/vaults/{vault}/keys/{key}/retire", response_model=Retirement)
def retire_version(
    vault: str, key: str, body: RetireRequest, ctx: Ctx = allow("vault", write=True)
) -> dict[str, Any]:
    """Start rewrap jobs for environments still on the version; report what remains and when safe."""
    return retire.retire(ctx.rt, vault, key, body.version)


@router.get("/environments/{env}/coverage", response_model=EnvironmentCoverage)
def env_coverage(env: str, ctx: Ctx = allow("env")) -> dict[str, Any]:
    """Every key version the environment's data depends on."""
    return coverage.env_coverage(ctx.rt, env)


@router.put("/policies/{policy}/rotation", response_model=Rotation)
def set_rotation(
    policy: str, body: RotationRequest, ctx: Ctx = allow("policy", write=True)
) -> dict[str, Any]:
    """Automatic rotation of the policy's key every `days` days (`null`: off)."""
    return lifecycle.set_rotation(ctx.rt, policy, body.days)
