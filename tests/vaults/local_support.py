"""Helpers shared by the local vault tests (not a test module)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import text

from keyshift.control.vaults import create_local_vault
from keyshift.runtime import Runtime
from keyshift.vaults.base import ALL_PERMISSIONS, KeyRef, KeyType
from keyshift.vaults.local import LocalVault

IDENTITY = "app-identity"


def snapshot(rt: Runtime) -> dict[str, object]:
    """Everything the vault tables hold (to prove that a refusal changed nothing)."""
    with rt.engine.connect() as conn:
        out: dict[str, object] = {}
        for table in ("vaults", "local_keys", "local_key_versions", "local_key_grants"):
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()
            out[table] = sorted((tuple(r) for r in rows), key=repr)
        return out


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


def concurrent_worker(home: str, db_url: str | None, tag: str, rounds: int, start: Any) -> None:
    """Run in a separate process: rotate the shared key, toggle it, create keys of its own."""
    rt = Runtime.open(home=home, database_url=db_url, principal=f"operator:{tag}")
    try:
        vault = rt.vault("shared")
        assert isinstance(vault, LocalVault)
        vault.describe(KeyRef("shared", "k"))  # connect and load before the race starts
        start.wait(30)  # both processes begin mutating at the same moment
        for i in range(rounds):
            vault.rotate_key("k")
            vault.set_enabled("k", i % 2 == 1)
            vault.create_key(f"{tag}-{i}", KeyType.AES, 256)
            vault.grant("k", f"{tag}-id-{i}", ALL_PERMISSIONS)
    finally:
        rt.close()
