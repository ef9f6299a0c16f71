"""The shared vault conformance suite, run against the embedded local vault.

AES-256 runs on SQLite and PostgreSQL; RSA-2048 (slower key generation, same SQL) on SQLite.
"""

from __future__ import annotations

import pytest
from conformance import MakeKey, VaultConformance
from local_support import IDENTITY, new_key, new_vault

from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyNotFoundError, KeyRef, KeyType
from keyshift.vaults.local import LocalVault


class _LocalHooks(VaultConformance):
    vault: LocalVault

    def revoke_access(self, ref: KeyRef, identity: str) -> None:
        self.vault.revoke_grant(ref.name, identity)

    def disable_key(self, ref: KeyRef) -> None:
        self.vault.set_enabled(ref.name, False)

    def destroy_key(self, ref: KeyRef) -> None:
        self.vault.delete_key(ref.name)

    def rotate_key(self, ref: KeyRef) -> None:
        self.vault.rotate_key(ref.name)


class TestLocalVaultAES(_LocalHooks):
    key_spec = (KeyType.AES, 256)

    @pytest.fixture
    def vault(self, rt: Runtime) -> LocalVault:
        return new_vault(rt)

    @pytest.fixture
    def make_key(self, vault: LocalVault) -> MakeKey:
        return lambda: (new_key(vault, KeyType.AES, 256), IDENTITY)


class TestLocalVaultRSA(_LocalHooks):
    key_spec = (KeyType.RSA, 2048)

    @pytest.fixture
    def vault(self, sqlite_rt: Runtime) -> LocalVault:
        return new_vault(sqlite_rt)

    @pytest.fixture
    def make_key(self, vault: LocalVault) -> MakeKey:
        return lambda: (new_key(vault, KeyType.RSA, 2048), IDENTITY)


def test_purged_key_is_not_found(sqlite_rt: Runtime) -> None:
    """Destroy = delete then purge (vault without purge protection): the key is gone, not just deleted."""
    vault = new_vault(sqlite_rt, purge_protection=False)
    ref = new_key(vault)
    wrapped = vault.wrap(ref, b"x" * 32, identity=IDENTITY)
    vault.delete_key(ref.name)
    vault.purge_key(ref.name)
    for call in (
        lambda: vault.unwrap(wrapped, identity=IDENTITY),
        lambda: vault.wrap(ref, b"x" * 32, identity=IDENTITY),
    ):
        with pytest.raises(KeyNotFoundError):
            call()
