"""`keyshift init [--allow-fake-clock]`: create or upgrade a state home."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.bootstrap import init_home
from keyshift.cli.common import emit, errors_handled, state, stdout
from keyshift.config import Settings


def _human(v: dict[str, Any]) -> None:
    def made(item: dict[str, Any]) -> str:
        return "created" if item.get("created") else "exists"

    lines = [
        f"[bold]Keyshift home[/] {v['home']} ({'created' if v['created'] else 'already initialised'})",
        f"  database:        {v['database']} (schema {v['schema']})",
        f"  fake clock:      {'allowed (KEYSHIFT_NOW)' if v['allow_fake_clock'] else 'not allowed'}",
        f"  master key:      {v['master_key']['kind']} ({made(v['master_key'])})",
        f"  platform vault:  {v['platform_vault']['name']} ({made(v['platform_vault'])})",
        f"  platform key:    {v['platform_key']['name']} ({made(v['platform_key'])})",
        f"  platform grant:  {v['platform_grant']['identity']} ({made(v['platform_grant'])})",
    ]
    stdout.print("\n".join(lines), highlight=False)


def init(
    ctx: typer.Context,
    allow_fake_clock: Annotated[
        bool,
        typer.Option(
            "--allow-fake-clock",
            help="Let this home honour KEYSHIFT_NOW (for drills and tests). Only applies at creation.",
        ),
    ] = False,
) -> None:
    """Create (or upgrade) the state home: schema, master key, platform vault and key."""
    st = state(ctx)
    with errors_handled(ctx):
        home = st.home if st.home is not None else Settings().home
        result = init_home(home, database_url=st.database_url, allow_fake_clock=allow_fake_clock)
        emit(ctx, result, _human)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
