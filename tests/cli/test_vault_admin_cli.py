"""`vault create --tenant`, `vault update` (rename, options) and `vault remove` (refused while used),
each audited; on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from cli_vault_support import VaultCli


def _trail(cli: VaultCli, action: str) -> list[dict[str, object]]:
    return [e for e in cli("audit-trail") if e["action"] == action]


def test_vault_create_for_a_tenant_update_and_remove(tmp_path: Path, db_url: str | None) -> None:
    cli = VaultCli(tmp_path / "home", db_url)
    cli("init")
    tenant = cli("tenant", "create", "contoso")
    made = cli("vault", "create", "contso-kv", "--tenant", "contoso", "--soft-delete-days", "30")
    assert made["tenant"]["id"] == tenant["id"] and made["tenant"]["name"] == "contoso"
    # The mistyped name is fixed; options change; purge protection only goes on.
    fixed = cli("vault", "update", "contso-kv", "--name", "contoso-kv", "--soft-delete-days", "60")
    assert (fixed["id"], fixed["name"], fixed["soft_delete_days"]) == (made["id"], "contoso-kv", 60)
    assert cli("vault", "show", "contso-kv", code=3)["code"] == "vault_not_found"
    assert cli("vault", "update", "contoso-kv", "--purge-protection")["purge_protection"] is True
    changes = _trail(cli, "vault.update")
    assert [e["outcome"] for e in changes] == ["ok", "ok"]
    # Refusals change nothing and are audited.
    assert cli("vault", "update", "contoso-kv", code=2)["code"] == "invalid_argument"
    assert cli("vault", "update", "contoso-kv", "--name", "platform", code=4)["code"] == "already_exists"
    assert cli("vault", "update", "contoso-kv", "--name", "bad name!", code=2)["code"] == "invalid_name"
    assert (
        cli("vault", "update", "contoso-kv", "--soft-delete-days", "3", code=2)["code"] == "invalid_retention"
    )
    assert cli("vault", "update", "platform", "--name", "p2", code=4)["code"] == "platform_vault"
    assert cli("vault", "show", "contoso-kv")["soft_delete_days"] == 60
    assert [e["outcome"] for e in _trail(cli, "vault.update")].count("error") == 5
    # Remove: refused while it holds keys or a policy uses it.
    cli("key", "create", "contoso-kv", "k1", "--type", "AES", "--size", "256")
    cli("policy", "create", "contoso", "pol", "--region", "eu", "--vault", "contoso-kv", "--key", "k1")
    assert cli("vault", "remove", "contoso-kv", code=4)["code"] == "vault_in_use"
    cli("policy", "delete", "pol")
    assert cli("vault", "remove", "contoso-kv", code=4)["code"] == "vault_not_empty"
    assert cli("vault", "show", "contoso-kv")["state"] == "active"
    assert cli("vault", "remove", "platform", code=4)["code"] == "platform_vault"


def test_remove_an_unused_vault_frees_its_name(tmp_path: Path, db_url: str | None) -> None:
    cli = VaultCli(tmp_path / "home", db_url)
    cli("init")
    made = cli("vault", "create", "typo-vault")
    gone = cli("vault", "remove", "typo-vault")
    assert gone["removed"] is True and gone["id"] == made["id"] and gone["name"] == "typo-vault"
    assert [v["name"] for v in cli("vault", "list")] == ["platform"]
    assert cli("vault", "show", "typo-vault", code=3)["code"] == "vault_not_found"
    again = cli("vault", "create", "typo-vault")
    assert again["id"] != made["id"]
    assert [e["outcome"] for e in _trail(cli, "vault.remove")] == ["ok"]
