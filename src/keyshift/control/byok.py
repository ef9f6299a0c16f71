"""Legacy BYOK: tenant keys (generate / import as password-protected PKCS#12), activation, and
applying the active key to an environment or reverting it to the platform key.

Keys live in the tenant's BYOK vault (a platform-owned local vault); the platform identity is
granted get/wrapKey/unwrapKey on each so the data plane can use it. States: `available` ->
`installing` -> `active`; one active key per tenant and region (the previous one goes back to
`available`); no second activation in the same tenant and region within 24 hours. An activation
that crashed while `installing` can be rerun; after INSTALL_TIMEOUT it no longer blocks others.

Applying rewraps every DEK of the environment under the active key (`stores.keys.rewrap_environment`,
which also flips the binding and writes the audit row in one transaction); reverting rewraps them
under the platform key (production environments need the name typed as confirmation).

Vault calls never run inside an open state-DB transaction (see control.common). Apply and revert
live in `byok_apply` (re-exported here).
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from keyshift.control.byok_apply import apply, revert
from keyshift.control.common import (
    get_byok_key,
    get_tenant,
    operation,
    refuse,
    validate_name,
    validate_region,
)
from keyshift.control.environments import require_byok_tenant
from keyshift.control.pkcs12_files import (
    check_password,
    check_size,
    fingerprint,
    generate_key,
    load_rsa_key,
    read_file,
    to_pkcs12,
    write_new_file,
)
from keyshift.control.tenants import byok_key_view
from keyshift.db.models import ByokKey, Tenant, VaultRecord
from keyshift.db.types import new_id
from keyshift.errors import (
    AlreadyExistsError,
    ConflictError,
    KeyshiftError,
)
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import ALL_PERMISSIONS, KeyRef

ACTIVATION_INTERVAL = timedelta(hours=24)
INSTALL_TIMEOUT = timedelta(minutes=15)


# -- adding keys ----------------------------------------------------------------------------------


def generate(
    rt: Runtime, tenant_ref: str, name: str, *, out: str | Path, password: str, region: str | None = None
) -> dict[str, Any]:
    """Generate an RSA-2048 tenant key, write it to `out` as password-protected PKCS#12 (0600)."""
    action = "byok.key.generate"
    path = Path(out)
    try:
        tenant_id, region, key, data = _new_pkcs12(rt, tenant_ref, name, password, region)
        write_new_file(path, data)
    except KeyshiftError as err:
        raise refuse(rt, action, err, target_type="byok_key", details={"name": name}) from None
    try:
        view = _add_key(rt, action, tenant_id, name, region, key, "generated")
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    view["file"] = str(path)
    return view


def generate_pkcs12(
    rt: Runtime, tenant_ref: str, name: str, *, password: str, region: str | None = None
) -> tuple[dict[str, Any], bytes]:
    """Generate a tenant key and return it as password-protected PKCS#12 bytes (for a download;
    nothing is written to disk) together with the key's view."""
    action = "byok.key.generate"
    try:
        tenant_id, region, key, data = _new_pkcs12(rt, tenant_ref, name, password, region)
    except KeyshiftError as err:
        raise refuse(rt, action, err, target_type="byok_key", details={"name": name}) from None
    return _add_key(rt, action, tenant_id, name, region, key, "generated"), data


def _new_pkcs12(
    rt: Runtime, tenant_ref: str, name: str, password: str, region: str | None
) -> tuple[str, str, rsa.RSAPrivateKey, bytes]:
    pw = check_password(password, new=True)
    tenant_id, region = _prevalidate(rt, tenant_ref, name, region, None)
    key = generate_key()
    return tenant_id, region, key, to_pkcs12(key, f"{tenant_ref}/{name}", pw, rt.clock.now())


def import_key(
    rt: Runtime, tenant_ref: str, name: str, *, file: str | Path, password: str, region: str | None = None
) -> dict[str, Any]:
    """Import a tenant key from a password-protected PKCS#12 file (RSA-2048 with its private key)."""
    path = Path(file)
    try:
        data = read_file(path)
    except KeyshiftError as err:
        raise refuse(rt, "byok.key.import", err, target_type="byok_key", details={"name": name}) from None
    return import_pkcs12(rt, tenant_ref, name, data=data, password=password, region=region, source=path.name)


def import_pkcs12(
    rt: Runtime,
    tenant_ref: str,
    name: str,
    *,
    data: bytes,
    password: str,
    region: str | None = None,
    source: str = "the uploaded file",
) -> dict[str, Any]:
    """Import a tenant key from password-protected PKCS#12 bytes (an upload or a file's content)."""
    action = "byok.key.import"
    try:
        pw = check_password(password, new=False)
        validate_name("BYOK key", name)
        key = load_rsa_key(check_size(data, source), pw, source)
        tenant_id, region = _prevalidate(rt, tenant_ref, name, region, fingerprint(key), allow_locked=True)
    except KeyshiftError as err:
        raise refuse(rt, action, err, target_type="byok_key", details={"name": name}) from None
    return _add_key(rt, action, tenant_id, name, region, key, "imported")


def _prevalidate(
    rt: Runtime, tenant_ref: str, name: str, region: str | None, fp: str | None, *, allow_locked: bool = False
) -> tuple[str, str]:
    validate_name("BYOK key", name)
    region = validate_region(rt, region)
    with rt.transaction() as s:
        tenant = get_tenant(s, tenant_ref)
        require_byok_tenant(tenant, allow_locked=allow_locked)
        _check_unique(s, tenant, name, fp)
        return tenant.id, region


def _check_unique(s: Any, tenant: Tenant, name: str, fp: str | None) -> None:
    live = (ByokKey.tenant_id == tenant.id, ByokKey.state != "deleted")
    if s.scalars(select(ByokKey.id).where(ByokKey.tenant_id == tenant.id, ByokKey.name == name)).first():
        raise AlreadyExistsError(
            f"tenant {tenant.name!r} already has a key named {name!r}", code="key_exists"
        )
    if fp and s.scalars(select(ByokKey.id).where(*live, ByokKey.fingerprint == fp)).first():
        raise AlreadyExistsError(
            f"this key is already in tenant {tenant.name!r} under another name", code="duplicate_key"
        )


def _add_key(
    rt: Runtime, action: str, tenant_id: str, name: str, region: str, key: rsa.RSAPrivateKey, source: str
) -> dict[str, Any]:
    with rt.transaction() as s:
        vault_id = s.get(Tenant, tenant_id).byok_vault_id  # type: ignore[union-attr]
    vault = rt.vault(vault_id)  # type: ignore[arg-type]
    vault_key_name = f"{name}-{secrets.token_hex(4)}"
    try:
        vault.import_rsa_key(vault_key_name, key)  # type: ignore[attr-defined]
        vault.grant(vault_key_name, rt.settings.platform_identity, ALL_PERMISSIONS)  # type: ignore[attr-defined]
    except KeyshiftError as err:
        raise refuse(
            rt, action, err, target_type="byok_key", tenant_id=tenant_id, details={"name": name}
        ) from None
    try:
        with operation(
            rt, action, target_type="byok_key", tenant_id=tenant_id, details={"name": name, "region": region}
        ) as op:
            tenant = get_tenant(op.session, tenant_id, lock=True)
            require_byok_tenant(tenant, allow_locked=source == "imported")
            _check_unique(op.session, tenant, name, fingerprint(key))
            now = rt.clock.now()
            row = ByokKey(
                id=new_id("bk"),
                tenant_id=tenant_id,
                name=name,
                region=region,
                state="available",
                source=source,
                vault_key_name=vault_key_name,
                fingerprint=fingerprint(key),
                state_changed_at=now,
                created_at=now,
            )
            op.session.add(row)
            op.session.flush()
            op.target_id = row.id
            op.details["fingerprint"] = row.fingerprint
            return byok_key_view(row)
    except BaseException:
        # Lost a race (or the tenant changed): don't leave an orphan key usable in the BYOK vault.
        with contextlib.suppress(Exception):
            vault.delete_key(vault_key_name)  # type: ignore[attr-defined]
        raise


def list_keys(rt: Runtime, tenant_ref: str) -> list[dict[str, Any]]:
    with rt.transaction() as s:
        tenant = get_tenant(s, tenant_ref)
        vault = s.get(VaultRecord, tenant.byok_vault_id) if tenant.byok_vault_id else None
        if vault is not None and vault.state == "deleted":
            return []  # the vault and every key in it are gone, whatever a key row still says
        rows = s.scalars(
            select(ByokKey)
            .where(ByokKey.tenant_id == tenant.id, ByokKey.state != "deleted")
            .order_by(ByokKey.created_at, ByokKey.name)
        )
        return [byok_key_view(k) for k in rows]


# -- activation -----------------------------------------------------------------------------------


def activate(rt: Runtime, tenant_ref: str, key_ref: str) -> dict[str, Any]:
    """available -> installing (checked usable in the vault) -> active; previous active -> available."""
    with operation(rt, "byok.key.install", target_type="byok_key") as op:
        s = op.session
        tenant = get_tenant(s, tenant_ref, lock=True)
        op.tenant_id = tenant.id
        require_byok_tenant(tenant, allow_locked=True)
        key = get_byok_key(s, tenant, key_ref)
        op.target_id, op.details["name"] = key.id, key.name
        _check_can_activate(rt, s, tenant, key)
        key.state, key.state_changed_at = "installing", rt.clock.now()
        s.flush()
        key_id, vault_id, vault_key, region = key.id, tenant.byok_vault_id, key.vault_key_name, key.region
    try:
        _round_trip(rt, vault_id, vault_key)  # type: ignore[arg-type]
    except KeyshiftError:
        with operation(rt, "byok.key.install.rollback", target_type="byok_key", target_id=key_id) as op:
            k = op.session.get(ByokKey, key_id)
            if k is not None and k.state == "installing":
                op.tenant_id = k.tenant_id
                k.state, k.state_changed_at = "available", rt.clock.now()
        raise
    with operation(rt, "byok.key.activate", target_type="byok_key", target_id=key_id) as op:
        s = op.session
        tenant = get_tenant(s, tenant_ref, lock=True)
        op.tenant_id = tenant.id
        installing = s.get(ByokKey, key_id)
        if installing is None or installing.state != "installing":
            raise ConflictError(
                "the key's activation was interrupted; run it again", code="activation_aborted"
            )
        key = installing
        now = rt.clock.now()
        previous = s.scalars(
            select(ByokKey).where(
                ByokKey.tenant_id == tenant.id, ByokKey.region == region, ByokKey.state == "active"
            )
        ).all()
        for old in previous:
            old.state, old.state_changed_at = "available", now
        key.state, key.state_changed_at, key.activated_at = "active", now, now
        tenant.last_key_change_at = now
        op.details.update(name=key.name, region=region, previous=[o.name for o in previous])
        s.flush()
        return byok_key_view(key)


def _check_can_activate(rt: Runtime, s: Any, tenant: Tenant, key: ByokKey) -> None:
    now = rt.clock.now()
    if key.state == "active":
        raise ConflictError(f"key {key.name!r} is already active", code="already_active")
    others = s.scalars(
        select(ByokKey).where(
            ByokKey.tenant_id == tenant.id,
            ByokKey.region == key.region,
            ByokKey.state == "installing",
            ByokKey.id != key.id,
        )
    ).all()
    for other in others:
        if other.state_changed_at and now - other.state_changed_at < INSTALL_TIMEOUT:
            raise ConflictError(
                f"key {other.name!r} is being activated in region {key.region!r}; try again later",
                code="activation_in_progress",
            )
        other.state, other.state_changed_at = "available", now  # abandoned by a crashed activation
    last = s.scalar(
        select(func.max(ByokKey.activated_at)).where(
            ByokKey.tenant_id == tenant.id, ByokKey.region == key.region
        )
    )
    if last is not None:
        from keyshift.clock import utc

        wait_until = utc(last) + ACTIVATION_INTERVAL
        if now < wait_until:
            raise ConflictError(
                f"a BYOK key of tenant {tenant.name!r} in region {key.region!r} was activated at "
                f"{iso_z(utc(last))}; the next activation is allowed from {iso_z(wait_until)}",
                code="activation_too_soon",
            )


def _round_trip(rt: Runtime, vault_id: str, vault_key: str) -> None:
    vault = rt.vault(vault_id)
    probe = secrets.token_bytes(32)
    ref = KeyRef(vault.name, vault_key)
    identity = rt.settings.platform_identity
    wrapped = vault.wrap(ref, probe, identity=identity)
    if not secrets.compare_digest(vault.unwrap(wrapped, identity=identity), probe):
        raise ConflictError("the key failed its wrap/unwrap check", code="key_check_failed")


__all__ = [
    "activate",
    "apply",
    "generate",
    "generate_pkcs12",
    "import_key",
    "import_pkcs12",
    "list_keys",
    "revert",
]
