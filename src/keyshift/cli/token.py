"""`keyshift token create|list|revoke`: API tokens for the REST API and the admin center."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, runtime, stdout
from keyshift.control import tokens

token_app = typer.Typer(help="API tokens (shown once, stored hashed).", no_args_is_help=True)


@token_app.command("create")
def create(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help="operator | tenant_admin | service | reader")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant the token is scoped to.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="Environment a service token may use (repeatable).")
    ] = None,
    label: Annotated[str | None, typer.Option("--label", help="A note to recognise the token by.")] = None,
) -> None:
    """Create a token. The token string is printed once and cannot be shown again."""
    with runtime(ctx) as rt:
        view = tokens.create_token(rt, role, tenant=tenant, envs=env or [], label=label)

    def human(v: dict[str, Any]) -> None:
        stdout.print(f"created token {v['id']} (role {v['role']})", highlight=False)
        stdout.print("token (shown once, store it now):", highlight=False)
        stdout.print(v["token"], highlight=False, soft_wrap=True)

    emit(ctx, view, human)


@token_app.command("list")
def list_(ctx: typer.Context) -> None:
    """List tokens (never their secrets)."""
    with runtime(ctx) as rt:
        rows = tokens.list_tokens(rt)
    emit(ctx, rows, lambda r: print_table(r, ["id", "role", "tenant", "environments", "state", "created_at"]))


@token_app.command("revoke")
def revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke a token; it stops working at once."""
    with runtime(ctx) as rt:
        view = tokens.revoke_token(rt, token_id)
    emit(ctx, view, f"revoked token {view['id']}")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
