"""`keyshift init [--allow-fake-clock]`: create or upgrade a state home."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.bootstrap import init_home
from keyshift.cli.common import emit, errors_handled, state, stdout
from keyshift.config import Settings, parse_regions


def _human(v: dict[str, Any]) -> None:
    def made(item: dict[str, Any]) -> str:
        return "created" if item.get("created") else "exists"

    lines = [
        f"[bold]Keyshift home[/] {v['home']} ({'created' if v['created'] else 'already initialised'})",
        f"  database:        {v['database']} (schema {v['schema']})"
        + (" — recorded in the home" if v.get("database_recorded") else ""),
        f"  regions:         {', '.join(v['regions'])} (default {v['default_region']})",
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
    regions: Annotated[
        str | None,
        typer.Option(
            "--regions",
            metavar="A,B,...",
            help="Regions of this deployment, comma-separated (default: a built-in list of short codes "
            "and geography names such as eu, us, europe, unitedstates). Only applies at creation.",
        ),
    ] = None,
    default_region: Annotated[
        str | None,
        typer.Option("--default-region", metavar="REGION", help="Region used when none is given."),
    ] = None,
) -> None:
    """Create (or upgrade) the state home: schema, master key, platform vault and key.

    With --database-url, the URL (without its password) is recorded in the home, so later commands
    need not repeat it.
    """
    st = state(ctx)
    with errors_handled(ctx):
        home = st.home if st.home is not None else Settings().home
        result = init_home(
            home,
            database_url=st.database_url,
            allow_fake_clock=allow_fake_clock,
            regions=parse_regions(regions) if regions is not None else None,
            default_region=default_region,
        )
        emit(ctx, result, _human)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
