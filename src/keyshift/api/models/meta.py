"""Who am I, and the liveness answer."""

from __future__ import annotations

from keyshift.api.models.base import Out, Ref


class WhoAmI(Out):
    principal: str
    token: Ref
    role: str
    tenant: Ref | None
    environments: list[Ref]
    platform_name: str


class Alive(Out):
    status: str
