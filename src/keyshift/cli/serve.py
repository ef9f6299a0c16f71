"""`keyshift serve [--host H] [--port P]`: the REST API and the admin center (Uvicorn).

Also `/healthz`, `/readyz` and `/metrics` at the root, an access log line per request and
structured logs (`--log-format json`).
"""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer

from keyshift.cli.common import errors_handled, state, vaults_ready
from keyshift.control.key_events import wire
from keyshift.errors import ConflictError


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
    strict_vaults: Annotated[
        bool, typer.Option("--strict-vaults", help="Exit 6 if a vault in use cannot be opened.")
    ] = False,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /openapi.json) and the admin center (/)."""
    import uvicorn

    from keyshift.api.app import create_app
    from keyshift.runtime import Runtime

    _setup_logging(log_format)
    st = state(ctx)
    with errors_handled(ctx):
        rt = wire(Runtime.open(home=st.home, database_url=st.database_url, principal="api:server"))
    vaults_ready(ctx, rt, "serve", strict_vaults)
    try:
        with errors_handled(ctx):
            sock = bind(host, port)  # before saying "serving on": a busy port is a clear error
        app = create_app(rt, require_vaults=tuple(require_vault or ()))
        bound = sock.getsockname()[1]
        typer.echo(f"serving on http://{host}:{bound}/ (API /api/v1, OpenAPI /openapi.json)", err=True)
        # log_config=None: uvicorn keeps our handlers; its own access log is replaced by ours.
        config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        rt.close()


def _setup_logging(log_format: str) -> None:
    from keyshift.observability import logs

    if log_format not in logs.FORMATS:
        raise typer.BadParameter(f"--log-format must be one of {', '.join(logs.FORMATS)}")
    logs.configure(log_format)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or ConflictError (exit 4) if the address is taken or invalid."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConflictError(f"cannot listen on {host}:{port}: {exc.strerror}", code="bad_address") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConflictError(
                f"cannot listen on {host}:{port}: the address is already in use", code="address_in_use"
            ) from None
        raise ConflictError(f"cannot listen on {host}:{port}: {exc.strerror}", code="bad_address") from None
    sock.set_inheritable(True)
    return sock


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
