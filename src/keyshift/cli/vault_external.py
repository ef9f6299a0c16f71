"""`keyshift vault add NAME --kind pkcs11|kmip|aws-kms ...`: register an external key vault.

Secrets are given by reference only: the HSM PIN by environment variable name (`--pin-env`) or file
path (`--pin-file`); the KMIP client key by file path; AWS credentials from the usual AWS
environment variables. There is deliberately no option that takes a secret value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, runtime, stdout
from keyshift.errors import UsageError

# Provider options, shared by `vault add` and `vault reconnect`.
ModuleOpt = Annotated[Path | None, typer.Option("--module", help="pkcs11: PKCS#11 library path.")]
TokenLabelOpt = Annotated[str | None, typer.Option("--token-label", help="pkcs11: token label.")]
PinEnvOpt = Annotated[
    str | None, typer.Option("--pin-env", help="pkcs11: name of the environment variable holding the PIN.")
]
PinFileOpt = Annotated[
    Path | None, typer.Option("--pin-file", help="pkcs11: file holding the PIN (mode 600).")
]
HostOpt = Annotated[str | None, typer.Option("--host", help="kmip: server host.")]
PortOpt = Annotated[int | None, typer.Option("--port", help="kmip: server port (usually 5696).")]
CertOpt = Annotated[Path | None, typer.Option("--cert", help="kmip: client certificate (PEM).")]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="kmip: client private key file (PEM).")]
CaOpt = Annotated[Path | None, typer.Option("--ca", help="kmip: CA certificate of the server (PEM).")]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="aws-kms: endpoint URL (default: AWS).")
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="aws-kms: AWS region.")]


def _abs(path: Path | None) -> str | None:
    return str(path.expanduser().absolute()) if path is not None else None


def build_config(
    kind: str,
    *,
    module: Path | None,
    token_label: str | None,
    pin_env: str | None,
    pin_file: Path | None,
    host: str | None,
    port: int | None,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    endpoint_url: str | None,
    region: str | None,
) -> dict[str, Any]:
    """Provider options -> the reference-only config stored in the vault record."""
    given: dict[str, dict[str, object]] = {
        "pkcs11": {
            "--module": module,
            "--token-label": token_label,
            "--pin-env": pin_env,
            "--pin-file": pin_file,
        },
        "kmip": {"--host": host, "--port": port, "--cert": cert, "--key": key, "--ca": ca},
        "aws-kms": {"--endpoint-url": endpoint_url, "--region": region},
    }
    if kind not in given:
        raise UsageError(f"unknown vault kind {kind!r}; expected pkcs11, kmip or aws-kms")
    foreign = [opt for k, opts in given.items() if k != kind for opt, v in opts.items() if v is not None]
    if foreign:
        raise UsageError(f"option(s) {', '.join(foreign)} do not apply to --kind {kind}")
    if kind == "pkcs11":
        from keyshift.vaults.secrets import SecretRef

        missing = [o for o, v in (("--module", module), ("--token-label", token_label)) if v is None]
        if missing:
            raise UsageError(f"--kind pkcs11 needs {', '.join(missing)}")
        pin = SecretRef.from_options(
            env=pin_env, file=pin_file, what="PIN (--pin-env VAR or --pin-file FILE)"
        )
        return {"module": _abs(module), "token_label": token_label, "pin": pin.to_config()}
    if kind == "kmip":
        missing = [o for o, v in given["kmip"].items() if v is None]
        if missing:
            raise UsageError(f"--kind kmip needs {', '.join(missing)}")
        return {"host": host, "port": port, "cert": _abs(cert), "key": _abs(key), "ca": _abs(ca)}
    if region is None:
        raise UsageError("--kind aws-kms needs --region")
    return {"endpoint_url": endpoint_url, "region": region}


def _human(v: dict[str, Any]) -> None:
    lines = [f"[bold]{v['name']}[/] ({v['id']}) registered: kind {v['kind']}"]
    for k, val in v["config"].items():
        if isinstance(val, dict):
            val = ", ".join(f"{a}={b}" for a, b in val.items())
        lines.append(f"  {k}: {val}")
    days = v["soft_delete_days"]
    lines.append(
        f"  soft delete: {'not declared' if days is None else f'{days} days'}, "
        f"purge protection: {'on' if v['purge_protection'] else 'off'} "
        "(as declared; Keyshift cannot verify these on an HSM or KMIP server)"
    )
    stdout.print("\n".join(lines), highlight=False)


def add(
    ctx: typer.Context,
    name: str,
    kind: Annotated[str, typer.Option("--kind", help="pkcs11, kmip or aws-kms.")],
    module: ModuleOpt = None,
    token_label: TokenLabelOpt = None,
    pin_env: PinEnvOpt = None,
    pin_file: PinFileOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    ca: CaOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    soft_delete_days: Annotated[
        int | None,
        typer.Option(
            "--soft-delete-days", help="The vault's soft-delete retention, as the customer declares it."
        ),
    ] = None,
    purge_protection: Annotated[
        bool,
        typer.Option(
            "--purge-protection", help="The vault has purge protection on (declared by the customer)."
        ),
    ] = False,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Tenant owning this vault (optional).")
    ] = None,
) -> None:
    """Register an external key vault (secrets by reference only; nothing is contacted)."""
    with runtime(ctx) as rt:
        from keyshift.control import audit_trail
        from keyshift.errors import KeyshiftError
        from keyshift.vaults.external import add_external_vault

        try:
            config = build_config(
                kind,
                module=module,
                token_label=token_label,
                pin_env=pin_env,
                pin_file=pin_file,
                host=host,
                port=port,
                cert=cert,
                key=key,
                ca=ca,
                endpoint_url=endpoint_url,
                region=region,
            )
        except KeyshiftError as exc:
            audit_trail.record_failure(rt, "vault.add", exc, target_type="vault", details={"name": name})
            raise
        view = add_external_vault(
            rt,
            name,
            kind,
            config,
            soft_delete_days=soft_delete_days,
            purge_protection=purge_protection,
            tenant=tenant,
        )
        emit(ctx, view, _human)


def changed_settings(
    kind: str,
    *,
    module: Path | None = None,
    token_label: str | None = None,
    pin_env: str | None = None,
    pin_file: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    ca: Path | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """The provider options given -> the settings to change (the others keep their values)."""
    given: dict[str, dict[str, tuple[str, object]]] = {
        "pkcs11": {"--module": ("module", _abs(module)), "--token-label": ("token_label", token_label)},
        "kmip": {
            "--host": ("host", host),
            "--port": ("port", port),
            "--cert": ("cert", _abs(cert)),
            "--key": ("key", _abs(key)),
            "--ca": ("ca", _abs(ca)),
        },
        "aws-kms": {"--endpoint-url": ("endpoint_url", endpoint_url), "--region": ("region", region)},
    }
    pin_given = {"--pin-env": pin_env, "--pin-file": pin_file}
    foreign = [opt for k, opts in given.items() if k != kind for opt, (_, v) in opts.items() if v is not None]
    if kind != "pkcs11":
        foreign += [opt for opt, v in pin_given.items() if v is not None]
    if foreign:
        raise UsageError(f"option(s) {', '.join(foreign)} do not apply to a {kind} vault")
    out = {field: v for field, v in given.get(kind, {}).values() if v is not None}
    if kind == "pkcs11" and (pin_env is not None or pin_file is not None):
        from keyshift.vaults.secrets import SecretRef

        pin = SecretRef.from_options(
            env=pin_env, file=pin_file, what="PIN (--pin-env VAR or --pin-file FILE)"
        )
        out["pin"] = pin.to_config()
    return out


def _human_reconnected(v: dict[str, Any]) -> None:
    lines = [f"[bold]{v['name']}[/] ({v['id']}) reconnected: {', '.join(v['changed'])} changed"]
    lines += [f"  proven: {p}" for p in v["proven"]] or ["  proven: nothing uses this vault yet"]
    stdout.print("\n".join(lines), highlight=False)


def reconnect(
    ctx: typer.Context,
    vault: str,
    module: ModuleOpt = None,
    token_label: TokenLabelOpt = None,
    pin_env: PinEnvOpt = None,
    pin_file: PinFileOpt = None,
    host: HostOpt = None,
    port: PortOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    ca: CaOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
) -> None:
    """Point an external vault at new connection settings (a moved endpoint, a new client
    certificate, another PIN reference). The settings given replace those of the vault; they are
    proven first — one data key of each key version in use is unwrapped through them — and
    nothing changes if that fails. Running processes pick them up within 30 s."""
    with runtime(ctx) as rt:
        from keyshift.control import audit_trail
        from keyshift.control.vault_reconnect import reconnect_vault
        from keyshift.errors import KeyshiftError
        from keyshift.vaults.registry import find_vault_record

        try:
            kind = find_vault_record(rt, vault).kind
            settings = changed_settings(
                kind,
                module=module,
                token_label=token_label,
                pin_env=pin_env,
                pin_file=pin_file,
                host=host,
                port=port,
                cert=cert,
                key=key,
                ca=ca,
                endpoint_url=endpoint_url,
                region=region,
            )
        except KeyshiftError as exc:
            audit_trail.record_failure(rt, "vault.reconnect", exc, target_type="vault", target_id=vault[:200])
            raise
        emit(ctx, reconnect_vault(rt, vault, settings), _human_reconnected)


def register(app: typer.Typer) -> None:
    from keyshift.cli.vault import vault_app

    vault_app.command("add")(add)
    vault_app.command("reconnect")(reconnect)
