"""`keyshift byok key generate|import|list|activate`, `byok apply ENV`, `byok revert ENV`.

(`byok lock|unlock` belong to a later issue.) Exports `byok_app` for modules that add commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, runtime, stdout
from keyshift.cli.env import human_env
from keyshift.control import byok

byok_app = typer.Typer(help="Legacy bring-your-own-key (BYOK) tenant keys.", no_args_is_help=True)
key_app = typer.Typer(help="BYOK tenant keys.", no_args_is_help=True)
byok_app.add_typer(key_app, name="key")

PASSWORD = typer.Option(
    "--password", envvar="KEYSHIFT_BYOK_PASSWORD", help="PKCS#12 password (or $KEYSHIFT_BYOK_PASSWORD)."
)


def _human_key(v: dict[str, Any]) -> None:
    extra = f", written to {v['file']}" if v.get("file") else ""
    stdout.print(
        f"BYOK key [bold]{v['name']}[/] ({v['id']}): {v['state']}, {v['region']}, {v['source']}{extra}\n"
        f"  fingerprint (SHA-256 of the public key): {v['fingerprint']}",
        highlight=False,
    )


@key_app.command("generate")
def generate(
    ctx: typer.Context,
    tenant: str,
    name: Annotated[str, typer.Option("--name", help="Key name.")],
    out: Annotated[Path, typer.Option("--out", help="PKCS#12 file to create (mode 0600).")],
    password: Annotated[str, PASSWORD],
    region: Annotated[str | None, typer.Option("--region", help="Region (default: settings).")] = None,
) -> None:
    """Generate an RSA-2048 tenant key and download it as a password-protected PKCS#12 file."""
    with runtime(ctx) as rt:
        emit(ctx, byok.generate(rt, tenant, name, out=out, password=password, region=region), _human_key)


@key_app.command("import")
def import_(
    ctx: typer.Context,
    tenant: str,
    name: Annotated[str, typer.Option("--name", help="Key name.")],
    file: Annotated[Path, typer.Option("--file", help="Password-protected PKCS#12 file.")],
    password: Annotated[str, PASSWORD],
    region: Annotated[str | None, typer.Option("--region", help="Region (default: settings).")] = None,
) -> None:
    """Import an RSA-2048 tenant key from a password-protected PKCS#12 file."""
    with runtime(ctx) as rt:
        emit(ctx, byok.import_key(rt, tenant, name, file=file, password=password, region=region), _human_key)


@key_app.command("list")
def list_(ctx: typer.Context, tenant: str) -> None:
    """List the tenant's BYOK keys."""
    with runtime(ctx) as rt:
        rows = byok.list_keys(rt, tenant)
        emit(ctx, rows, lambda r: print_table(r, ["name", "region", "state", "source", "activated_at"]))


@key_app.command("activate")
def activate(ctx: typer.Context, tenant: str, key: str) -> None:
    """Activate a key (available -> installing -> active); one active key per tenant and region."""
    with runtime(ctx) as rt:
        emit(ctx, byok.activate(rt, tenant, key), _human_key)


@byok_app.command("apply")
def apply(ctx: typer.Context, env: str) -> None:
    """Re-encrypt (rewrap) the environment under the tenant's active BYOK key."""
    with runtime(ctx) as rt:
        emit(ctx, byok.apply(rt, env), human_env)


@byok_app.command("revert")
def revert(
    ctx: typer.Context,
    env: str,
    confirm: Annotated[
        str | None, typer.Option("--confirm", help="The environment's name (required for production).")
    ] = None,
) -> None:
    """Return the environment to the platform key."""
    with runtime(ctx) as rt:
        emit(ctx, byok.revert(rt, env, confirm=confirm), human_env)


def register(app: typer.Typer) -> None:
    app.add_typer(byok_app, name="byok")
