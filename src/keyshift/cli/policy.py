"""`keyshift policy create|list|show|health|update|delete` (group owner: `policy_app`)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, ref_text, runtime, stdout
from keyshift.control import policies
from keyshift.migrate import maintenance

NOT_HEALTHY_EXIT = 4  # precondition: the policy cannot be used to link environments as it is

policy_app = typer.Typer(help="Enterprise policies (customer-managed keys).", no_args_is_help=True)


def _human_policy(v: dict[str, Any]) -> None:
    key = v["key"] + (f"@{v['key_version']}" if v.get("key_version") else "")
    lines = [
        f"[bold]{v['name']}[/] ({v['id']}) — tenant {ref_text(v['tenant'])}, {v['region']}, {v['state']}",
        f"  key:       {ref_text(v['vault'])}/{key}",
        f"  identity:  {v['identity']}  (grant it get, wrapKey, unwrapKey on the key)",
        f"  health:    {v['health']}"
        + (f" (checked {v['health_checked_at']})" if v["health_checked_at"] else ""),
    ]
    lines += [f"    - {r}" for r in v["health_reasons"]]
    lines.append("  environments: " + (", ".join(e["name"] for e in v["environments"]) or "-"))
    stdout.print("\n".join(lines), highlight=False)


def _human_health(v: dict[str, Any]) -> None:
    lines = [f"policy {ref_text(v['policy'])}: [bold]{v['health']}[/] (checked {v['checked_at']})"]
    lines += [f"  - {r}" for r in v["reasons"]]
    ev = v.get("evidence")
    if ev:
        lines.append(
            f"  evidence: vault {ev.get('vault')}, check: {ev.get('check')}, answer: {ev.get('answer')}"
        )
    if v.get("observed_key_version"):
        lines.append(f"  key version in use: {v['observed_key_version']}")
    if v.get("rotate_jobs"):
        lines.append(f"  new key version: rewrap jobs started {', '.join(v['rotate_jobs'])}")
    stdout.print("\n".join(lines), highlight=False)


@policy_app.command("create")
def create(
    ctx: typer.Context,
    tenant: str,
    name: str,
    region: Annotated[str, typer.Option("--region", help="Region of the policy.")],
    vault: Annotated[str, typer.Option("--vault", help="Vault holding the key.")],
    key: Annotated[str, typer.Option("--key", help="Key name.")],
    key_version: Annotated[str | None, typer.Option("--key-version", help="Pin a key version.")] = None,
) -> None:
    """Create an enterprise policy (and its identity)."""
    with runtime(ctx) as rt:
        view = policies.create_policy(
            rt, tenant, name, region=region, vault=vault, key=key, key_version=key_version
        )
        emit(ctx, view, _human_policy)


@policy_app.command("list")
def list_(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant.")] = None,
) -> None:
    """List policies."""
    with runtime(ctx) as rt:
        rows = policies.list_policies(rt, tenant=tenant)
        emit(
            ctx,
            rows,
            lambda r: print_table(
                [{**p, "environments": len(p["environments"])} for p in r],
                ["name", "tenant", "region", "vault", "key", "health", "environments"],
            ),
        )


@policy_app.command("show")
def show(ctx: typer.Context, policy: str) -> None:
    """Show a policy, its identity, health and linked environments."""
    with runtime(ctx) as rt:
        emit(ctx, policies.show_policy(rt, policy), _human_policy)


@policy_app.command("health")
def health_(ctx: typer.Context, policy: str) -> None:
    """Check the policy's key now (vault settings, key state and type, grants, wrap/unwrap).

    Exit 0 when healthy; 4 when it is not (the result is still printed); 6 when this process
    cannot use the vault (nothing is recorded)."""
    with runtime(ctx) as rt:
        view = maintenance.policy_health(rt, policy)
        emit(ctx, view, _human_health)
    if view["health"] != "healthy":
        raise typer.Exit(NOT_HEALTHY_EXIT)


@policy_app.command("update")
def update(
    ctx: typer.Context,
    policy: str,
    key: Annotated[str, typer.Option("--key", help="New key name.")],
    key_version: Annotated[str | None, typer.Option("--key-version", help="Pin a key version.")] = None,
) -> None:
    """Point the policy at another key (refused while environments are linked)."""
    with runtime(ctx) as rt:
        emit(ctx, policies.update_policy(rt, policy, key=key, key_version=key_version), _human_policy)


@policy_app.command("delete")
def delete(ctx: typer.Context, policy: str) -> None:
    """Delete the policy (refused while environments are linked)."""
    with runtime(ctx) as rt:
        emit(ctx, policies.delete_policy(rt, policy), f"policy {policy} deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
