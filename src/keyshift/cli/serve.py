"""`keyshift serve [--host H] [--port P]`: the REST API and the admin center (Uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from keyshift.cli.common import errors_handled, state, vaults_ready
from keyshift.control.key_events import wire
from keyshift.runtime import Runtime


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8080,
    strict_vaults: Annotated[
        bool, typer.Option("--strict-vaults", help="Exit 6 if a vault in use cannot be opened.")
    ] = False,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /openapi.json) and the admin center (/)."""
    import uvicorn

    from keyshift.api.app import create_app

    st = state(ctx)
    with errors_handled(ctx):
        rt = wire(Runtime.open(home=st.home, database_url=st.database_url, principal="api:server"))
    vaults_ready(ctx, rt, "serve", strict_vaults)
    try:
        app = create_app(rt)
        typer.echo(f"serving on http://{host}:{port}/ (API /api/v1, OpenAPI /openapi.json)", err=True)
        uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, server_header=False)
    finally:
        rt.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
