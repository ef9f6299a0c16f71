"""`keyshift env export ENV --out DIR`: the environment's data as plaintext files (docs/FORMAT.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keyshift.cli.common import emit, runtime


def export_cmd(
    ctx: typer.Context,
    env: str,
    out: Annotated[Path, typer.Option("--out", help="Output directory (must not exist, or be empty).")],
) -> None:
    """Export the environment's records, audit events and files as plaintext (audited)."""
    from keyshift.features.export import export_environment

    with runtime(ctx) as rt:
        result = export_environment(rt, env, out)
        emit(
            ctx,
            result,
            f"exported {sum(result['records'].values())} records, {result['audit_events']} audit events "
            f"and {result['files']} files of {result['environment']['name']} to {result['out']}",
        )


def register(app: typer.Typer) -> None:
    from keyshift.cli.env import env_app

    env_app.command("export")(export_cmd)
