"""CLI: `keyshift init` on SQLite and PostgreSQL, idempotent, --allow-fake-clock, clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cli_vault_support import VaultCli

from keyshift.config import HomeInfo


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYSHIFT_MASTER_PASSPHRASE", raising=False)


def test_init_creates_home_and_is_idempotent(tmp_path: Path, db_url: str | None) -> None:
    home = tmp_path / "home"
    cli = VaultCli(home, db_url)
    first = cli("init", "--allow-fake-clock")
    assert first["created"] is True and first["home"] == str(home)
    assert first["master_key"] == {"created": True, "kind": "file"}
    assert first["platform_vault"]["created"] and first["platform_key"]["created"]
    assert first["platform_grant"] == {"identity": "keyshift-platform", "created": True}
    assert first["allow_fake_clock"] is True and HomeInfo.load(home).allow_fake_clock
    assert first["database"].startswith("postgresql" if db_url else "sqlite")
    assert stat.S_IMODE((home / "master.key").stat().st_mode) == 0o600
    second = cli("init")
    assert second["created"] is False
    assert not any(
        second[k]["created"] for k in ("master_key", "platform_vault", "platform_key", "platform_grant")
    )
    vaults = cli("vault", "list")
    assert [v["name"] for v in vaults] == ["platform"] and vaults[0]["owner"] == "platform"
    key = cli("key", "show", "platform", "platform-kek")
    assert (key["type"], key["size"]) == ("AES", 256)
    human = cli.raw("init", as_json=False)
    assert human.exit_code == 0 and "platform vault" in human.stdout


def test_init_without_fake_clock_and_insecure_master_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cli = VaultCli(home, None)
    assert cli("init")["allow_fake_clock"] is False
    (home / "master.key").chmod(0o644)
    err = cli("init", code=4)
    assert err["code"] == "master_key_insecure"
    err = cli("key", "rotate", "platform", "platform-kek", code=4)
    assert err["code"] == "master_key_insecure"
    (home / "master.key").chmod(0o600)
    assert cli("key", "show", "platform", "platform-kek")["current_version"] == "1"
