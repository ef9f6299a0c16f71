"""`keyshift key ...`: create, rotate, update (expiry), enable/disable, delete/recover/purge,
grant/revoke, list, show.

Works on any registered vault whose adapter implements KeyManager. Output never holds key material.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, ref_text, runtime, stdout
from keyshift.clock import parse_time
from keyshift.control import vaults

key_app = typer.Typer(help="Keys (KEKs) in a vault: lifecycle and access grants.", no_args_is_help=True)

VersionOpt = Annotated[
    str | None, typer.Option("--version", help="One key version (default: the whole key).")
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Proceed although the key still covers data (audited as forced)."),
]


def _human_key(k: dict[str, Any]) -> None:
    lines = [
        f"[bold]{ref_text(k['vault'])}/{k['name']}[/]: {k['type']}-{k['size']}, {k['state']}, "
        f"current version {k['current_version']}"
    ]
    if k.get("purge_after"):
        lines.append(f"  purge after: {k['purge_after']}")
    for v in k["versions"]:
        window = []
        if v["not_before"]:
            window.append(f"not before {v['not_before']}")
        if v["expires"]:
            window.append(f"expires {v['expires']}")
        state = "enabled" if v["enabled"] else "disabled"
        lines.append(f"  version {v['version']}: {state}" + (f" ({', '.join(window)})" if window else ""))
    for g in k.get("grants", []):
        lines.append(f"  grant {g['identity']}: {', '.join(g['permissions'])}")
    stdout.print("\n".join(lines), highlight=False)


@key_app.command("create")
def create(
    ctx: typer.Context,
    vault: str,
    name: str,
    key_type: Annotated[str, typer.Option("--type", help="RSA or AES.")],
    size: Annotated[int, typer.Option("--size", help="RSA: 2048/3072/4096; AES: 256.")],
    expires: Annotated[str | None, typer.Option("--expires", help="ISO 8601 date/time.")] = None,
    not_before: Annotated[str | None, typer.Option("--not-before", help="ISO 8601 date/time.")] = None,
) -> None:
    """Create a key."""
    with runtime(ctx) as rt:
        result = vaults.create_key(
            rt,
            vault,
            name,
            key_type,
            size,
            expires=parse_time(expires) if expires else None,
            not_before=parse_time(not_before) if not_before else None,
        )
        emit(ctx, result, _human_key)


@key_app.command("rotate")
def rotate(ctx: typer.Context, vault: str, name: str) -> None:
    """Add a new current version; older versions still unwrap (an expired one too, decrypt-only)."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.rotate_key(rt, vault, name), _human_key)


@key_app.command("update")
def update(
    ctx: typer.Context,
    vault: str,
    name: str,
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="New expiry (ISO 8601 date/time), or 'never' to clear it."),
    ] = None,
    version: VersionOpt = None,
) -> None:
    """Extend, shorten or clear the expiry of a key version (default: the current version)."""
    from keyshift.control.key_expiry import update_key_expiry

    with runtime(ctx) as rt:
        emit(ctx, update_key_expiry(rt, vault, name, expires, version=version), _human_key)


@key_app.command("disable")
def disable(
    ctx: typer.Context, vault: str, name: str, version: VersionOpt = None, force: ForceOpt = False
) -> None:
    """Disable a key (or one version): wrap and unwrap are refused at once."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.set_key_enabled(rt, vault, name, False, version=version, force=force), _human_key)


@key_app.command("enable")
def enable(ctx: typer.Context, vault: str, name: str, version: VersionOpt = None) -> None:
    """Enable a key (or one version)."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.set_key_enabled(rt, vault, name, True, version=version), _human_key)


@key_app.command("delete")
def delete(ctx: typer.Context, vault: str, name: str, force: ForceOpt = False) -> None:
    """Soft-delete a key (recoverable for the vault's retention period)."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.delete_key(rt, vault, name, force=force), _human_key)


@key_app.command("recover")
def recover(ctx: typer.Context, vault: str, name: str) -> None:
    """Recover a soft-deleted key."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.recover_key(rt, vault, name), _human_key)


@key_app.command("purge")
def purge(ctx: typer.Context, vault: str, name: str, force: ForceOpt = False) -> None:
    """Permanently destroy a soft-deleted key (refused under purge protection until retention ends)."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.purge_key(rt, vault, name, force=force), f"purged {vault}/{name}")


@key_app.command("grant")
def grant(
    ctx: typer.Context,
    vault: str,
    name: str,
    identity: Annotated[str, typer.Option("--identity", help="Who receives the permissions.")],
    permissions: Annotated[
        str, typer.Option("--permissions", help="Comma-separated: get,wrapKey,unwrapKey.")
    ],
) -> None:
    """Grant an identity permissions on a key (replaces its previous grant)."""
    with runtime(ctx) as rt:
        result = vaults.grant_key(rt, vault, name, identity, permissions)
        emit(ctx, result, f"granted {identity} {','.join(result['permissions'])} on {vault}/{name}")


@key_app.command("revoke-grant")
def revoke_grant(
    ctx: typer.Context,
    vault: str,
    name: str,
    identity: Annotated[str, typer.Option("--identity", help="Whose grant to remove.")],
    force: ForceOpt = False,
) -> None:
    """Remove an identity's grant on a key (takes effect on the next wrap/unwrap)."""
    with runtime(ctx) as rt:
        result = vaults.revoke_key_grant(rt, vault, name, identity, force=force)
        emit(ctx, result, f"revoked {identity} on {vault}/{name}")


@key_app.command("list")
def list_(ctx: typer.Context, vault: str) -> None:
    """List the keys of a vault."""
    with runtime(ctx) as rt:
        rows = vaults.list_keys(rt, vault)
        emit(ctx, rows, lambda r: print_table(r, ["name", "type", "size", "state", "current_version"]))


@key_app.command("show")
def show(ctx: typer.Context, vault: str, name: str) -> None:
    """Show a key: versions, enabled, not-before, expires, grants (never key material)."""
    with runtime(ctx) as rt:
        emit(ctx, vaults.show_key(rt, vault, name), _human_key)


def register(app: typer.Typer) -> None:
    app.add_typer(key_app, name="key")
