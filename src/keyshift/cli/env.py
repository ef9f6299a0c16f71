"""`keyshift env create|list|show|delete|managed enable|disable|feature enable` (group owner: `env_app`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, ref_text, runtime, stdout
from keyshift.control import environments

env_app = typer.Typer(help="Environments and their encryption.", no_args_is_help=True)
managed_app = typer.Typer(help="The environment's Managed Environment flag.", no_args_is_help=True)
feature_app = typer.Typer(help="Environment features.", no_args_is_help=True)
env_app.add_typer(managed_app, name="managed")
env_app.add_typer(feature_app, name="feature")


def human_env(v: dict[str, Any]) -> None:
    enc = v["encryption"]
    key = enc["key"] or {}
    keytext = f"{ref_text(key.get('vault'))}/{key.get('name')}" + (
        f"@{key['version']}" if key.get("version") else ""
    )
    lines = [
        f"[bold]{v['name']}[/] ({v['id']}) — tenant {ref_text(v['tenant'])}, {v['region']}, {v['type']}",
        f"  state:            {v['state']}" + (f" ({v['state_reason']})" if v.get("state_reason") else ""),
        f"  managed:          {v['managed']}",
        f"  sql_restriction:  {v['sql_restriction']}",
        f"  features:         {', '.join(v['features']) or '-'}",
        "  stores:           " + ", ".join(f"{k}={val}" for k, val in v["stores"].items()),
        "  Environment encryption",
        f"    mode:           {enc['mode']}",
        f"    managed by:     {enc['managed_by_display']}",
        f"    status:         {enc['status']}",
        f"    policy:         {ref_text(enc['policy'])}"
        + (f" ({enc['policy_health']})" if enc.get("policy_health") else ""),
        f"    key:            {keytext}"
        + (f" (BYOK key {ref_text(key['byok_key'])})" if key.get("byok_key") else ""),
    ]
    stdout.print("\n".join(lines), highlight=False)


@env_app.command("create")
def create(
    ctx: typer.Context,
    tenant: str,
    name: str,
    region: Annotated[str | None, typer.Option("--region", help="Region (default: settings).")] = None,
    env_type: Annotated[
        str | None,
        typer.Option("--type", help="production|sandbox|trial|teams|developer (default sandbox)."),
    ] = None,
    byok: Annotated[bool, typer.Option("--byok", help="Encrypt with the tenant's active BYOK key.")] = False,
) -> None:
    """Create an environment (on the platform key, or with --byok on the tenant's active BYOK key)."""
    with runtime(ctx) as rt:
        view = environments.create_environment(rt, tenant, name, region=region, env_type=env_type, byok=byok)
        emit(ctx, view, human_env)


@env_app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
    with_policies: Annotated[
        bool, typer.Option("--with-policies", help="Only environments linked to a policy.")
    ] = False,
) -> None:
    """List environments ("Environments with policies" with --with-policies)."""
    with runtime(ctx) as rt:
        rows = environments.list_environments(rt, tenant=tenant, with_policies=with_policies)
        cols = ["name", "tenant", "region", "type", "state", "mode", "managed_by"]
        if with_policies:
            cols += ["policy", "status", "policy_health"]
        emit(ctx, rows, lambda rs: print_table(_display(rt, rs), cols))


def _display(rt: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for r in rows:
        enc = r["encryption"]
        flat.append({**r, **enc, "managed_by": enc["managed_by_display"]})
    return flat


@env_app.command("show")
def show(ctx: typer.Context, env: str) -> None:
    """Show the environment encryption page."""
    with runtime(ctx) as rt:
        emit(ctx, environments.show_environment(rt, env), human_env)


@managed_app.command("enable")
def managed_enable(ctx: typer.Context, env: str) -> None:
    """Make the environment a Managed Environment."""
    with runtime(ctx) as rt:
        emit(ctx, environments.set_managed(rt, env, True), human_env)


@managed_app.command("disable")
def managed_disable(ctx: typer.Context, env: str) -> None:
    """Turn the Managed Environment flag off (refused while linked to a policy)."""
    with runtime(ctx) as rt:
        emit(ctx, environments.set_managed(rt, env, False), human_env)


@feature_app.command("enable")
def feature_enable(ctx: typer.Context, env: str, feature: str) -> None:
    """Enable a feature (features needing non-SQL storage are refused under the SQL restriction)."""
    with runtime(ctx) as rt:
        emit(ctx, environments.enable_feature(rt, env, feature), human_env)


@feature_app.command("disable")
def feature_disable(ctx: typer.Context, env: str, feature: str) -> None:
    """Turn a feature off (its stored data is kept, encrypted, for when it is turned on again)."""
    from keyshift.control import env_features

    with runtime(ctx) as rt:
        emit(ctx, env_features.disable_feature(rt, env, feature), human_env)


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")


@env_app.command("delete")
def delete(
    ctx: typer.Context,
    env: str,
    confirm: Annotated[
        str | None, typer.Option("--confirm", help="The environment's name, typed as confirmation.")
    ] = None,
) -> None:
    """Delete an environment now (operator): its data is crypto-shredded — every data key destroyed,
    records, audit events, files, indexes, exports and backups removed. Irreversible. Refused while a
    job holds the environment."""
    from keyshift.control.deletion import delete_now

    with runtime(ctx) as rt:
        result = delete_now(rt, env, confirm=confirm)

        def human(v: dict[str, Any]) -> None:
            extra = []
            if v["tenant_lock_ended"]:
                extra.append("the tenant lock ended")
            if v["tenant_finalized"]:
                extra.append("the tenant finalized its move off BYOK")
            tail = f" ({'; '.join(extra)})" if extra else ""
            stdout.print(
                f"deleted environment [bold]{v['environment']['name']}[/] ({v['environment']['id']}){tail}",
                highlight=False,
            )

        emit(ctx, result, human)
