"""What the external vault adapters (pkcs11, kmip, aws-kms) share, and registering one.

`add_external_vault` is the use case behind `keyshift vault add NAME --kind ...`: it validates the
provider configuration (secrets by reference only — see `keyshift.vaults.secrets`), stores a
VaultRecord and an admin audit row in one transaction. It does not contact the vault: a vault may
be registered before it is reachable; `vault show` reports reachability.

The soft-delete and purge-protection settings of an external vault are *declared* by the customer.
Keyshift cannot verify them on an HSM or a KMIP server; on AWS KMS, deletion is always scheduled
with a waiting period of 7-30 days (the declared soft-delete days are used as that window).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from keyshift.db.models import VaultRecord
from keyshift.db.types import new_id
from keyshift.errors import ConflictError, UsageError
from keyshift.runtime import Runtime
from keyshift.timefmt import iso_z
from keyshift.vaults.base import LOCAL, VaultInfo, outcome_of

EXTERNAL_KINDS: dict[str, str] = {
    "pkcs11": "keyshift.vaults.pkcs11",
    "kmip": "keyshift.vaults.kmip",
    "aws-kms": "keyshift.vaults.aws_kms",
}

MIN_DEK_BYTES = 16
MAX_DEK_BYTES = 64


def check_dek(dek: bytes) -> bytes:
    """DEKs are raw symmetric keys: bytes of 16..64 octets. Anything else is a caller bug."""
    if not isinstance(dek, bytes | bytearray):
        raise UsageError("a DEK must be bytes")
    if not MIN_DEK_BYTES <= len(dek) <= MAX_DEK_BYTES:
        raise UsageError(f"a DEK must be {MIN_DEK_BYTES}..{MAX_DEK_BYTES} bytes, got {len(dek)}")
    return bytes(dek)


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    """Deterministic bytes for an encryption context (sorted keys, compact JSON)."""
    if not context:
        return b"{}"
    for k, v in context.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise UsageError("encryption context keys and values must be strings")
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


def unsupported(kind: str, what: str, why: str = "") -> ConflictError:
    tail = f": {why}" if why else ""
    return ConflictError(f"{what} is not supported by vault kind {kind}{tail}", code="not_supported")


def declared_info(
    record_name: str,
    kind: str,
    config: Mapping[str, Any],
    soft_delete_days: int | None,
    purge_protection: bool,
    *,
    symmetric_only: bool,
    probe: Callable[[], str],
    native_aes: bool = False,
) -> VaultInfo:
    """VaultInfo with the customer-declared settings and a reachability probe that never raises.

    A failed probe says why in `detail` and its outcome (refused / unreachable / local) in `outcome`.
    """
    from keyshift.errors import KeyshiftError

    outcome: str | None = None
    try:
        detail = probe()
        reachable = True
    except KeyshiftError as exc:
        reachable, detail, outcome = False, f"{exc.code}: {exc.message}", outcome_of(exc)
    except Exception as exc:  # unexpected client failure: report, do not crash `vault show`
        reachable, detail, outcome = False, f"client error: {type(exc).__name__}", LOCAL
    return VaultInfo(
        name=record_name,
        kind=kind,
        soft_delete_days=soft_delete_days,
        purge_protection=purge_protection,
        symmetric_only=symmetric_only,
        reachable=reachable,
        detail=detail,
        native_aes=native_aes,
        outcome=outcome,
    )


def validate_config(kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    module = EXTERNAL_KINDS.get(kind)
    if module is None:
        raise UsageError(f"unknown external vault kind {kind!r}; expected one of {', '.join(EXTERNAL_KINDS)}")
    validator = importlib.import_module(module).validate_config
    return validator(raw)  # type: ignore[no-any-return]


def add_external_vault(
    rt: Runtime,
    name: str,
    kind: str,
    raw_config: Mapping[str, Any],
    *,
    soft_delete_days: int | None = None,
    purge_protection: bool = False,
    tenant: str | None = None,
) -> dict[str, Any]:
    """Register an external vault (no network contact). Returns its view."""
    from keyshift.control.common import get_tenant, operation, validate_name

    details: dict[str, Any] = {"name": name, "kind": kind}
    with operation(rt, "vault.add", target_type="vault", details=details) as op:
        validate_name("vault", name)
        config = validate_config(kind, raw_config)
        if soft_delete_days is not None and not 0 <= soft_delete_days <= 3650:
            raise UsageError("--soft-delete-days must be between 0 and 3650")
        if kind == "aws-kms" and soft_delete_days is not None and not 7 <= soft_delete_days <= 30:
            raise UsageError(
                "AWS KMS schedules key deletion 7..30 days ahead; --soft-delete-days must be 7..30"
            )
        owner_tenant = get_tenant(op.session, tenant) if tenant else None
        tenant_id = owner_tenant.id if owner_tenant else None
        existing = op.session.query(VaultRecord).filter(VaultRecord.name == name).first()
        if existing is not None:
            from keyshift.errors import AlreadyExistsError

            raise AlreadyExistsError(f"vault {name!r} already exists", code="vault_exists")
        row = VaultRecord(
            id=new_id("vlt"),
            name=name,
            kind=kind,
            owner="customer",
            tenant_id=tenant_id,
            config=config,
            soft_delete_days=soft_delete_days,
            purge_protection=purge_protection,
            state="active",
            created_at=rt.clock.now(),
        )
        op.session.add(row)
        op.target_id = row.id
        op.tenant_id = tenant_id
        op.details.update({"config": public_config(config)})
        return record_view(row, owner_tenant.name if owner_tenant else None)


def public_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The stored config is already reference-only; this is what views and audit rows show."""
    return json.loads(json.dumps(dict(config)))  # a detached copy


def record_view(row: VaultRecord, tenant_name: str | None = None) -> dict[str, Any]:
    """The vault as `vault list/show` shows it (tenant as an {id, name} reference) plus its config."""
    return {
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "owner": row.owner,
        "tenant": {"id": row.tenant_id, "name": tenant_name} if row.tenant_id else None,
        "config": public_config(row.config or {}),
        "soft_delete_days": row.soft_delete_days,
        "purge_protection": bool(row.purge_protection),
        "settings_declared": True,
        "state": row.state,
        "created_at": iso_z(row.created_at) if row.created_at else None,
    }
