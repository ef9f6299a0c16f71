"""`env re-enable ENV`, `env deletion show|cancel ENV`, `byok lock T ...`, `byok unlock T [ENV]`,
`policy monitor [P]` (one health-monitor round now; exit 6 when this process could not check a policy).

Adds commands to groups owned by other modules: `env_app` (cli/env.py), `byok_app` (cli/byok.py),
`policy_app` (cli/policy.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, runtime, stdout

deletion_app = typer.Typer(
    help="Scheduled deletion of disabled or locked environments.", no_args_is_help=True
)


def re_enable(ctx: typer.Context, env: str) -> None:
    """Re-enable an environment disabled by a revoked key, after a real wrap/unwrap round trip."""
    from keyshift.control.revocation import reenable_environment

    with runtime(ctx) as rt:
        out = reenable_environment(rt, env)
    emit(
        ctx,
        out,
        lambda v: stdout.print(
            f"environment [bold]{v['environment']['name']}[/] enabled "
            f"(key {v['key']} verified, {v['deks_checked']} data keys)",
            highlight=False,
        ),
    )


def _human_deletion(v: dict[str, Any]) -> None:
    when = v["delete_after"] or "not scheduled"
    env = v["environment"]
    stdout.print(f"environment [bold]{env['name']}[/] ({v['state']}): deletion {when}", highlight=False)


@deletion_app.command("show")
def deletion_show(ctx: typer.Context, env: str) -> None:
    """Show an environment's state and scheduled deletion time."""
    from keyshift.control.deletion import show_deletion

    with runtime(ctx) as rt:
        out = show_deletion(rt, env)
    emit(ctx, out, _human_deletion)


@deletion_app.command("cancel")
def deletion_cancel(ctx: typer.Context, env: str) -> None:
    """Cancel an environment's scheduled deletion (it stays disabled or locked)."""
    from keyshift.control.deletion import cancel_deletion

    with runtime(ctx) as rt:
        out = cancel_deletion(rt, env)
    emit(ctx, out, _human_deletion)


def lock(
    ctx: typer.Context,
    tenant: str,
    file: Annotated[Path, typer.Option("--file", help="The tenant's active key (PKCS#12).")],
    password: Annotated[str, typer.Option("--password", help="PKCS#12 password.", hide_input=True)],
    confirm: Annotated[str | None, typer.Option("--confirm", help="Type the tenant's name.")] = None,
) -> None:
    """Lock a BYOK tenant: delete its BYOK keys and lock every BYOK environment."""
    from keyshift.control.byok_lock import lock as do_lock

    with runtime(ctx) as rt:
        out = do_lock(rt, tenant, file=file, password=password, confirm=confirm)
    emit(
        ctx,
        out,
        lambda v: stdout.print(
            f"tenant [bold]{v['tenant']}[/] locked: {len(v['environments_locked'])} environment(s) locked, "
            f"{v['keys_deleted']} key(s) deleted",
            highlight=False,
        ),
    )


def unlock(ctx: typer.Context, tenant: str, env: Annotated[str | None, typer.Argument()] = None) -> None:
    """Unlock a BYOK tenant's environments (all, or ENV) after the same key was re-imported and activated."""
    from keyshift.control.byok_lock import unlock as do_unlock

    with runtime(ctx) as rt:
        out = do_unlock(rt, tenant, env)
    emit(
        ctx,
        out,
        lambda v: stdout.print(
            f"tenant [bold]{v['tenant']}[/]: {len(v['unlocked'])} environment(s) unlocked, "
            f"{v['still_locked']} still locked",
            highlight=False,
        ),
    )


def monitor(ctx: typer.Context, policy: Annotated[str | None, typer.Argument()] = None) -> None:
    """Run the health monitor now (every linked policy, or POLICY): record health, disable the
    environments of a policy whose key is unusable."""
    from keyshift.control.monitor import check_one, monitor_once

    with runtime(ctx) as rt:
        if policy is None:
            out = monitor_once(rt)
        else:
            from keyshift.control.common import get_policy

            with rt.transaction() as s:
                policy_id = get_policy(s, policy).id
            out = {policy_id: check_one(rt, policy_id)}

    emit(ctx, out, _human_monitor)
    if any(r.get("outcome") == "local" for r in out.values()):
        raise typer.Exit(6)  # this process could not check a policy (nothing changed); see "error"


def _human_monitor(v: dict[str, Any]) -> None:
    # Plain text (no Rich markup): outcomes such as `[unreachable]` and vault messages print as given.
    if not v:
        typer.echo("no linked policies to check")
        return
    for policy, r in v.items():
        if "error" in r:
            outcome = r.get("outcome") or "error"
            typer.echo(f"policy {policy}: not checked [{outcome}] {r['error']['message']}")
            continue
        usable = {True: "usable", False: "unusable", None: "unknown"}[r["key_usable"]]
        typer.echo(f"policy {policy}: health {r['health']}, key {usable}; action: {r['action']}")
        for reason in r["reasons"]:
            typer.echo(f"  - {reason}")
        if r["environments_disabled"]:
            typer.echo(f"  environments disabled: {', '.join(r['environments_disabled'])}")
        ev = r.get("evidence")
        if ev:
            typer.echo(
                f"  evidence: vault {ev.get('vault')}, check: {ev.get('check')}, answer: {ev.get('answer')}"
            )


def register(app: typer.Typer) -> None:
    from keyshift.cli.byok import byok_app
    from keyshift.cli.env import env_app

    env_app.command("re-enable")(re_enable)
    env_app.add_typer(deletion_app, name="deletion")
    byok_app.command("lock")(lock)
    byok_app.command("unlock")(unlock)
    try:
        from keyshift.cli.policy import policy_app
    except ImportError:  # pragma: no cover - the policy group not built
        return
    policy_app.command("monitor")(monitor)
