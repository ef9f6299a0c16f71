"""`keyshift tenant create|list|show|byok-flag remove|add`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, runtime, stdout
from keyshift.control import tenants

tenant_app = typer.Typer(help="Tenants and their legacy BYOK status.", no_args_is_help=True)
byok_flag_app = typer.Typer(
    help="The tenant's legacy BYOK feature flag (operator only).", no_args_is_help=True
)
tenant_app.add_typer(byok_flag_app, name="byok-flag")


def _human_tenant(v: dict[str, Any]) -> None:
    vault = v["byok_vault"]
    lines = [
        f"[bold]{v['name']}[/] ({v['id']})",
        f"  byok_feature:      {v['byok_feature']}",
        f"  sql_restriction:   {v['sql_restriction']}",
        f"  environments:      {v['environments']}",
    ]
    if v["byok_flag_ticket"]:
        lines.append(f"  BYOK flag removed: {v['byok_flag_removed_at']} (ticket {v['byok_flag_ticket']})")
    if vault:
        extra = f", delete after {vault['delete_after']}" if vault["delete_after"] else ""
        lines.append(f"  BYOK vault:        {vault['name']} ({vault['state']}{extra})")
    if v.get("locked_at"):
        lines.append(f"  locked since:      {v['locked_at']}")
    if v["final_byok_migration_at"]:
        lines.append(f"  final BYOK migration: {v['final_byok_migration_at']}")
    for k in v["byok_keys"]:
        lines.append(f"  BYOK key {k['name']}: {k['state']} ({k['region']}, {k['source']})")
    stdout.print("\n".join(lines), highlight=False)


@tenant_app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    byok: Annotated[bool, typer.Option("--byok", help="Legacy BYOK tenant (operator only).")] = False,
) -> None:
    """Create a tenant."""
    with runtime(ctx) as rt:
        emit(ctx, tenants.create_tenant(rt, name, byok=byok), _human_tenant)


@tenant_app.command("list")
def list_(ctx: typer.Context) -> None:
    """List tenants."""
    with runtime(ctx) as rt:
        rows = tenants.list_tenants(rt)
        emit(
            ctx,
            rows,
            lambda r: print_table(r, ["name", "id", "byok_feature", "sql_restriction", "environments"]),
        )


@tenant_app.command("show")
def show(ctx: typer.Context, tenant: str) -> None:
    """Show a tenant: BYOK flag, SQL restriction, BYOK vault and keys, finalization."""
    with runtime(ctx) as rt:
        emit(ctx, tenants.show_tenant(rt, tenant), _human_tenant)


@byok_flag_app.command("remove")
def byok_flag_remove(
    ctx: typer.Context,
    tenant: str,
    ticket: Annotated[str, typer.Option("--ticket", help="Operator's ticket reference.")],
) -> None:
    """Turn the tenant's legacy BYOK feature off (sql_restriction stays until finalization)."""
    with runtime(ctx) as rt:
        emit(ctx, tenants.byok_flag_remove(rt, tenant, ticket=ticket), _human_tenant)


@byok_flag_app.command("add")
def byok_flag_add(
    ctx: typer.Context,
    tenant: str,
    ticket: Annotated[str, typer.Option("--ticket", help="Operator's ticket reference.")],
) -> None:
    """Turn a legacy BYOK tenant's BYOK feature back on (refused once the tenant finalized)."""
    with runtime(ctx) as rt:
        emit(ctx, tenants.byok_flag_add(rt, tenant, ticket=ticket), _human_tenant)


def register(app: typer.Typer) -> None:
    app.add_typer(tenant_app, name="tenant")
