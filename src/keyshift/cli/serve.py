"""`keyshift serve [--host H] [--port P]`: the REST API and the admin center (Uvicorn)."""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer

from keyshift.cli.common import errors_handled, state
from keyshift.errors import ConflictError


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8080,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /openapi.json) and the admin center (/)."""
    import uvicorn

    from keyshift.api.app import create_app
    from keyshift.runtime import Runtime

    st = state(ctx)
    with errors_handled(ctx):
        rt = Runtime.open(home=st.home, database_url=st.database_url, principal="api:server")
    try:
        with errors_handled(ctx):
            sock = bind(host, port)  # before saying "serving on": a busy port is a clear error
        app = create_app(rt)
        bound = sock.getsockname()[1]
        typer.echo(f"serving on http://{host}:{bound}/ (API /api/v1, OpenAPI /openapi.json)", err=True)
        config = uvicorn.Config(app, log_level="info", access_log=False, server_header=False)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        rt.close()


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
