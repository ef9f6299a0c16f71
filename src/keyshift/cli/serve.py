"""`keyshift serve [--host H] [--port P]`: the REST API and the admin center (Uvicorn).

Also `/healthz`, `/readyz` and `/metrics` at the root, an access log line per request and
structured logs (`--log-format json`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from keyshift.cli.common import errors_handled, state
from keyshift.runtime import Runtime


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8080,
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log lines as readable `text` or `json` (one object a line).")
    ] = "text",
    require_vault: Annotated[
        list[str] | None,
        typer.Option(
            "--require-vault",
            help="A vault /readyz must be able to open (repeatable; the platform vault always is).",
        ),
    ] = None,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /openapi.json) and the admin center (/)."""
    import uvicorn

    from keyshift.api.app import create_app

    _setup_logging(log_format)
    st = state(ctx)
    with errors_handled(ctx):
        rt = Runtime.open(home=st.home, database_url=st.database_url, principal="api:server")
    try:
        app = create_app(rt, require_vaults=tuple(require_vault or ()))
        typer.echo(f"serving on http://{host}:{port}/ (API /api/v1, OpenAPI /openapi.json)", err=True)
        # log_config=None: uvicorn keeps our handlers; its own access log is replaced by ours.
        uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False)
    finally:
        rt.close()


def _setup_logging(log_format: str) -> None:
    from keyshift.observability import logs

    if log_format not in logs.FORMATS:
        raise typer.BadParameter(f"--log-format must be one of {', '.join(logs.FORMATS)}")
    logs.configure(log_format)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
