"""From a registered vault (db row) to a KeyVault adapter. One factory per kind.

Providers register lazily so that optional dependencies (python-pkcs11, PyKMIP) are imported only
when a vault of that kind is opened.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import or_, select

from keyshift.db.models import VaultRecord
from keyshift.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from keyshift.runtime import Runtime
    from keyshift.vaults.base import KeyVault

VaultFactory = Callable[["Runtime", VaultRecord], "KeyVault"]

# kind -> "module:function" building the adapter from (runtime, vault record)
PROVIDERS: dict[str, str] = {
    "local": "keyshift.vaults.local:open_local_vault",
    "pkcs11": "keyshift.vaults.pkcs11:open_pkcs11_vault",
    "kmip": "keyshift.vaults.kmip:open_kmip_vault",
    "aws-kms": "keyshift.vaults.aws_kms:open_aws_kms_vault",
}


def factory_for(kind: str) -> VaultFactory:
    target = PROVIDERS.get(kind)
    if target is None:
        raise UsageError(f"unknown vault kind {kind!r}; expected one of {', '.join(sorted(PROVIDERS))}")
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)  # type: ignore[no-any-return]


def find_vault_record(rt: Runtime, name_or_id: str) -> VaultRecord:
    with rt.transaction() as session:
        row = session.scalars(
            select(VaultRecord).where(
                or_(VaultRecord.name == name_or_id, VaultRecord.id == name_or_id),
                VaultRecord.state != "deleted",
            )
        ).first()
        if row is None:
            raise NotFoundError(f"vault {name_or_id!r} not found", code="vault_not_found")
        session.expunge(row)
        return row


def settings_version(rt: Runtime, name_or_id: str) -> int | None:
    """The version of a vault record's connection settings (bumped by `vault reconnect`); None if
    there is no such vault. A read-only unit of work: callers may be inside a write transaction."""
    from keyshift.db.engine import read_transaction

    with read_transaction(rt.sessions) as session:
        return session.scalars(
            select(VaultRecord.version).where(
                or_(VaultRecord.name == name_or_id, VaultRecord.id == name_or_id),
                VaultRecord.state != "deleted",
            )
        ).first()


# kind -> (the third-party module it needs, the keyshift extra that installs it)
EXTRA_OF: dict[str, tuple[str, str]] = {"pkcs11": ("pkcs11", "hsm"), "kmip": ("kmip", "kmip")}


def require_extra(kind: str) -> None:
    """VaultLocalError naming `pip install 'keyshift[EXTRA]'` when the kind's package is missing
    (local to this process: it never changes shared state)."""
    needed = EXTRA_OF.get(kind)
    if needed is None:
        return
    try:
        importlib.import_module(needed[0])
    except ImportError:
        from keyshift.extras import MissingExtraError
        from keyshift.vaults.base import VaultLocalError

        message = MissingExtraError(f"a {kind} vault", needed[1]).message
        raise VaultLocalError(message, code="vault_client_missing") from None


def open_vault(rt: Runtime, name_or_id: str) -> KeyVault:
    """The adapter for a registered vault, its calls counted and timed (observability)."""
    return adapter_for(rt, find_vault_record(rt, name_or_id))


def adapter_for(rt: Runtime, row: VaultRecord) -> KeyVault:
    """The adapter of a vault record (read from the database, or a candidate's settings not saved
    yet), its calls counted and timed (observability)."""
    from keyshift.observability.vault_calls import instrument

    require_extra(row.kind)
    return instrument(factory_for(row.kind)(rt, row))


def open_fresh(rt: Runtime, name_or_id: str) -> KeyVault:
    """A new adapter of the vault with its own session/connection (not the runtime's cached one),
    to confirm an answer before acting on it. Close it after use (`close()` where it has one).

    An adapter standing in for the vault in this runtime (a test's fault injector) may provide
    `fresh()`; its answer is used instead, so that its faults apply to fresh connections too.
    """
    cached = rt.vault(name_or_id)
    fresh = getattr(cached, "fresh", None)
    if callable(fresh):
        return fresh()  # type: ignore[no-any-return]
    return open_vault(rt, name_or_id)
