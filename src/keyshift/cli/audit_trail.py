"""`keyshift audit-trail [--tenant T] [--since TIME] [--limit N]`: the admin audit trail."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, runtime
from keyshift.control import audit_trail


def _target(row: dict[str, Any]) -> str:
    """`type:name (id)`, `type:id` without a name; never cut."""
    target = row["target"]
    if target is None:
        return str(row["target_type"])
    shown = f"{target['name']} ({target['id']})" if target["name"] else str(target["id"])
    return f"{row['target_type']}:{shown}"


def _human(rows: list[dict[str, Any]]) -> None:
    print_table(
        [{**r, "target": _target(r)} for r in rows],
        ["at", "principal", "action", "target", "outcome", "reason"],
    )


def audit_trail_cmd(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant (name or id).")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="The newest N rows (1-100000, default 1000).")
    ] = 1000,
) -> None:
    """Who did what, when, and how it ended: every control-plane change and key operation.

    Newest first (like `job list`): `--limit N` shows the latest N events.
    """
    with runtime(ctx) as rt:
        rows = audit_trail.read(rt, tenant=tenant, since=since, limit=limit, newest_first=True)
        emit(ctx, rows, _human)


def register(app: typer.Typer) -> None:
    app.command("audit-trail")(audit_trail_cmd)
