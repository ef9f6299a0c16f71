"""`keyshift demo [--keep]`: the full BYOK -> CMK migration scenario with live load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, errors_handled, print_table, state, stdout


def demo_cmd(
    ctx: typer.Context,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the demo home (printed) instead of a temp dir.")
    ] = False,
) -> None:
    """Run the whole scenario: BYOK tenant, three environments, online migration to a customer key."""
    from keyshift.demo import run_demo

    quiet = state(ctx).json
    home = None
    if keep:
        import tempfile

        home = Path(tempfile.mkdtemp(prefix="keyshift-demo-"))
    with errors_handled(ctx):
        out = run_demo(
            home, say=(lambda _m: None) if quiet else (lambda m: stdout.print(f"• {m}", highlight=False))
        )
    emit(ctx, out, _human)
    if out["load_errors"]:
        raise typer.Exit(1)


def _human(out: dict[str, Any]) -> None:
    rows = [
        {
            "environment": r["environment"],
            "mode": r["mode"],
            "secs": r["seconds"],
            "vault calls": r["vault_calls"],
            "live reqs": r["load_requests"],
            "errors": r["load_errors"],
            "rows/events/files": "/".join(str(r["verified"][k]) for k in ("rows", "events", "files")),
        }
        for r in out["environments"]
    ]
    print_table(rows, list(rows[0]), title="BYOK -> customer-managed key, online")
    managed_by = out["environments"][0]["managed_by"] if out["environments"] else "-"
    stdout.print(
        f"every record, event and file verified; managed by {managed_by}\n"
        f"environments with policies: {', '.join(out['with_policies'])}\n"
        f"tenant: sql_restriction={out['tenant']['sql_restriction']}, final BYOK migration "
        f"{out['tenant']['final_byok_migration_at']}, BYOK vault {out['tenant']['byok_vault']['state']} "
        f"until {out['tenant']['byok_vault']['delete_after']}\n"
        f"total {out['seconds']}s, live-load errors: {out['load_errors']}"
        + (f"\nhome kept at {out['home']}" if out.get("home") else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
