"""Who am I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyshift.api.access import Ctx, allow

router = APIRouter(tags=["meta"])


@router.get("/whoami")
def whoami(ctx: Ctx = allow("authenticated")) -> dict[str, Any]:
    p = ctx.principal
    assert p is not None
    return {
        "principal": p.label,
        "token_id": p.token_id,
        "role": p.role,
        "tenant_id": p.tenant_id,
        "env_ids": sorted(p.env_ids),
        "platform_name": ctx.rt.settings.platform_name,
    }
