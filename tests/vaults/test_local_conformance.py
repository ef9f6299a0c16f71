"""The shared vault conformance suite, run against the embedded local vault.

AES-256 and RSA-2048, each on SQLite and PostgreSQL. Each test makes its own vault and keys, so one
state home per backend serves the whole module.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conformance import MakeKey, VaultConformance
from local_support import IDENTITY, new_key, new_vault
from sqlalchemy import create_engine, text

from keyshift.bootstrap import init_home
from keyshift.clock import FixedClock
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyNotFoundError, KeyRef, KeyType
from keyshift.vaults.local import LocalVault

PG_BASE = os.environ.get("KEYSHIFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_rt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One initialised home per backend for this module (PostgreSQL: a throwaway schema)."""
    home: Path = tmp_path_factory.mktemp("conformance") / "home"
    url: str | None = None
    admin = None
    schema = f"ks_{secrets.token_hex(6)}"
    if request.param == "postgres":
        admin = create_engine(PG_BASE, connect_args={"connect_timeout": 3})
        try:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        except Exception as exc:
            admin.dispose()
            pytest.skip(f"PostgreSQL at {PG_BASE} unreachable: {type(exc).__name__}")
        sep = "&" if "?" in PG_BASE else "?"
        url = f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"
    init_home(home, database_url=url, allow_fake_clock=True)
    rt = Runtime.open(
        home=home,
        database_url=url,
        clock=FixedClock(datetime(2026, 1, 5, 12, tzinfo=UTC)),
        principal="operator:test",
    )
    yield rt
    rt.close()
    if admin is not None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


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
    def vault(self, module_rt: Runtime) -> LocalVault:
        return new_vault(module_rt)

    @pytest.fixture
    def make_key(self, vault: LocalVault) -> MakeKey:
        return lambda: (new_key(vault, KeyType.AES, 256), IDENTITY)


class TestLocalVaultRSA(_LocalHooks):
    key_spec = (KeyType.RSA, 2048)

    @pytest.fixture
    def vault(self, module_rt: Runtime) -> LocalVault:
        return new_vault(module_rt)

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
