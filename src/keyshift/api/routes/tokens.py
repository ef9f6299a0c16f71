"""API tokens (operator only, like `keyshift token ...`): list, create (the secret is in the
response once and never again), revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from keyshift.api.access import Ctx, allow
from keyshift.api.schemas import Body, Name, Ref
from keyshift.control import token_admin

router = APIRouter(tags=["tokens"])

Role = Literal["operator", "tenant_admin", "service", "reader"]


class ObjectRef(BaseModel):
    id: str
    name: str | None


class TokenOut(BaseModel):
    id: str = Field(description="The token's public id (`tok_` + 20 hex); never the secret.")
    role: Role
    tenant: ObjectRef | None
    environments: list[ObjectRef] = Field(description="Environments a service token may use.")
    label: str | None
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None
    state: Literal["active", "revoked"]


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The token string `<id>.<secret>`: shown in this response only.")


class OperatorTokenCreate(Body):
    """An operator token: deployment-wide, never scoped to a tenant or environment."""

    role: Literal["operator"]
    label: Name | None = None


class TenantAdminTokenCreate(Body):
    """A tenant admin token: its whole tenant."""

    role: Literal["tenant_admin"]
    tenant: Ref
    label: Name | None = None


class ReaderTokenCreate(Body):
    """A reader token: read-only, deployment-wide or one tenant's."""

    role: Literal["reader"]
    tenant: Ref | None = None
    label: Name | None = None


class ServiceTokenCreate(Body):
    """A service token: data-plane access to the environments named (at least one)."""

    role: Literal["service"]
    tenant: Ref | None = None
    environments: list[Ref] = Field(min_length=1, max_length=100)
    label: Name | None = None


# The role decides which fields a token takes, so the schema says so (one body per role).
TokenCreate = Annotated[
    OperatorTokenCreate | TenantAdminTokenCreate | ReaderTokenCreate | ServiceTokenCreate,
    Field(discriminator="role"),
]


@router.get("/tokens", response_model=list[TokenOut], operation_id="tokens_list")
def list_tokens(
    role: Role | None = None,
    tenant: str | None = Query(default=None, min_length=1, max_length=200),
    state: Literal["active", "revoked"] | None = None,
    ctx: Ctx = allow("operator"),
) -> list[dict[str, Any]]:
    """Tokens, newest first (never their secrets), optionally filtered by role, tenant and state."""
    return token_admin.list_token_views(ctx.rt, role=role, tenant=tenant, state=state)


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreatedOut,
    operation_id="tokens_create",
)
def create_token(body: TokenCreate, response: Response, ctx: Ctx = allow("operator")) -> dict[str, Any]:
    """Create a token; the response is the only time its secret is shown."""
    response.headers["Cache-Control"] = "no-store"
    return token_admin.create_token_view(
        ctx.rt,
        body.role,
        tenant=getattr(body, "tenant", None),
        envs=list(getattr(body, "environments", [])),
        label=body.label,
    )


@router.post("/tokens/{token}/revoke", response_model=TokenOut, operation_id="tokens_revoke")
def revoke_token(token: str, ctx: Ctx = allow("operator")) -> dict[str, Any]:
    """Revoke a token; it stops working at once (revoking a revoked token changes nothing)."""
    return token_admin.revoke_token_view(ctx.rt, token)
