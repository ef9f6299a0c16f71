"""Who am I."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from keyshift.api.access import Ctx, allow
from keyshift.api.models.meta import WhoAmI
from keyshift.control import refs
from keyshift.db.models import Environment

router = APIRouter(tags=["meta"])


@router.get("/whoami", response_model=WhoAmI)
def whoami(ctx: Ctx = allow("authenticated")) -> dict[str, Any]:
    p = ctx.principal
    assert p is not None
    with ctx.rt.transaction() as s:
        env_names = refs.names(s, Environment, p.env_ids)
        return {
            "principal": p.label,
            "token": {"id": p.token_id, "name": None},
            "role": p.role,
            "tenant": refs.tenant_ref(s, p.tenant_id),
            "environments": [{"id": e, "name": env_names.get(e)} for e in sorted(p.env_ids)],
            "platform_name": ctx.rt.settings.platform_name,
        }
