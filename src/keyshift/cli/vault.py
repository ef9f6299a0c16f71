"""`keyshift vault create|list|show` (local vaults; `vault add` for external ones lives elsewhere)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, runtime, stdout
from keyshift.control import vault_registry, vaults

vault_app = typer.Typer(
    help="Key vaults: the embedded local vault and registered external ones.", no_args_is_help=True
)


def _human_vault(v: dict[str, Any]) -> None:
    lines = [
        f"[bold]{v['name']}[/] ({v['id']})",
        f"  kind:             {v['kind']} (owner {v['owner']})",
        f"  soft delete:      {v['soft_delete_days']} days",
        f"  purge protection: {v['purge_protection']}",
        f"  state:            {v['state']}",
    ]
    if "reachable" in v:
        lines.append(
            f"  reachable:        {v['reachable']}" + (f" — {v['detail']}" if v.get("detail") else "")
        )
    stdout.print("\n".join(lines), highlight=False)
    keys = v.get("keys")
    if keys:
        print_table(
            [
                {
                    **k,
                    "versions": ", ".join(
                        f"{x['version']}{'' if x['enabled'] else ' (disabled)'}" for x in k["versions"]
                    ),
                }
                for k in keys
            ],
            ["name", "type", "size", "state", "current_version", "versions"],
            title="keys",
        )


@vault_app.command("create")
def create(
    ctx: typer.Context,
    name: str,
    soft_delete_days: Annotated[
        int, typer.Option("--soft-delete-days", help="Soft-delete retention, 7-90 days.")
    ] = 90,
    purge_protection: Annotated[
        bool, typer.Option("--purge-protection", help="Refuse purging deleted keys before retention ends.")
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant", metavar="TENANT", help="The tenant this vault belongs to (its admins see it)."
        ),
    ] = None,
) -> None:
    """Create a local vault."""
    with runtime(ctx) as rt:
        tenant_id = vault_registry.tenant_id(rt, tenant)
        emit(
            ctx,
            vaults.create_local_vault(
                rt,
                name,
                soft_delete_days=soft_delete_days,
                purge_protection=purge_protection,
                tenant_id=tenant_id,
            ),
            _human_vault,
        )


@vault_app.command("list")
def list_(ctx: typer.Context) -> None:
    """List registered vaults."""
    with runtime(ctx) as rt:
        rows = vaults.list_vaults(rt)
        emit(
            ctx,
            rows,
            lambda r: print_table(
                r, ["name", "kind", "owner", "soft_delete_days", "purge_protection", "state"]
            ),
        )


@vault_app.command("show")
def show(ctx: typer.Context, vault: str) -> None:
    """Show a vault: kind, soft delete, purge protection, reachability and its keys."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.show_vault(rt, vault), _human_vault)


@vault_app.command("update")
def update(
    ctx: typer.Context,
    vault: str,
    name: Annotated[str | None, typer.Option("--name", metavar="NEW_NAME", help="Rename the vault.")] = None,
    soft_delete_days: Annotated[
        int | None, typer.Option("--soft-delete-days", metavar="DAYS", help="Soft-delete retention, 7-90.")
    ] = None,
    purge_protection: Annotated[
        bool | None,
        typer.Option("--purge-protection", help="Turn purge protection on (it cannot be turned off)."),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", metavar="TENANT", help="Assign the vault to a tenant.")
    ] = None,
) -> None:
    """Rename a vault or change its options."""
    with runtime(ctx) as rt:
        view = vault_registry.update_vault(
            rt,
            vault,
            name=name,
            soft_delete_days=soft_delete_days,
            purge_protection=purge_protection,
            tenant=tenant,
        )
        emit(ctx, view, _human_vault)


@vault_app.command("remove")
def remove(ctx: typer.Context, vault: str) -> None:
    """Unregister a vault (refused while a policy or an environment uses it, or it holds local keys)."""
    with runtime(ctx) as rt:
        view = vault_registry.remove_vault(rt, vault)
        emit(ctx, view, f"removed vault {view['name']} ({view['id']})")


def register(app: typer.Typer) -> None:
    app.add_typer(vault_app, name="vault")
