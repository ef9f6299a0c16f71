"""Helpers shared by the local vault tests (not a test module)."""

from __future__ import annotations

import secrets

from keyshift.control.vaults import create_local_vault
from keyshift.runtime import Runtime
from keyshift.vaults.base import ALL_PERMISSIONS, KeyRef, KeyType
from keyshift.vaults.local import LocalVault

IDENTITY = "app-identity"


def new_vault(rt: Runtime, *, days: int = 7, purge_protection: bool = True) -> LocalVault:
    name = f"v-{secrets.token_hex(4)}"
    create_local_vault(rt, name, soft_delete_days=days, purge_protection=purge_protection)
    vault = rt.vault(name)
    assert isinstance(vault, LocalVault)
    return vault


def new_key(
    vault: LocalVault,
    key_type: KeyType = KeyType.AES,
    size: int = 256,
    *,
    identity: str = IDENTITY,
    **kw: object,
) -> KeyRef:
    name = f"k-{secrets.token_hex(4)}"
    vault.create_key(name, key_type, size, **kw)  # type: ignore[arg-type]
    vault.grant(name, identity, ALL_PERMISSIONS)
    return KeyRef(vault.name, name)
