"""CLI: `vault create|list|show` — JSON shapes, exit codes, error JSON, state unchanged."""

from __future__ import annotations

from pathlib import Path

from cli_vault_support import VaultCli
from local_support import snapshot

from keyshift.runtime import Runtime


def test_vault_create_list_show_and_bad_input(rt: Runtime, home: Path, db_url: str | None) -> None:
    cli = VaultCli(home, db_url)
    v = cli("vault", "create", "cust", "--soft-delete-days", "30", "--purge-protection")
    assert (v["kind"], v["owner"], v["soft_delete_days"], v["purge_protection"]) == (
        "local",
        "customer",
        30,
        True,
    )
    plain = cli("vault", "create", "plain")
    assert (plain["soft_delete_days"], plain["purge_protection"]) == (90, False)
    assert sorted(r["name"] for r in cli("vault", "list")) == ["cust", "plain", "platform"]
    cli("key", "create", "cust", "k", "--type", "AES", "--size", "256")
    shown = cli("vault", "show", v["id"])  # names or ids
    assert shown["name"] == "cust" and shown["reachable"] is True and shown["key_management"] is True
    assert [(k["name"], k["state"], [x["version"] for x in k["versions"]]) for k in shown["keys"]] == [
        ("k", "enabled", ["1"])
    ]
    before = snapshot(rt)
    for args, exit_code, code in [
        (("vault", "create", "x", "--soft-delete-days", "6"), 2, "invalid_retention"),
        (("vault", "create", "x", "--soft-delete-days", "91"), 2, "invalid_retention"),
        (("vault", "create", "bad name"), 2, "invalid_name"),
        (("vault", "create", "cust"), 4, "already_exists"),
        (("vault", "show", "nope"), 3, "vault_not_found"),
    ]:
        assert cli(*args, code=exit_code)["code"] == code
    assert snapshot(rt) == before
    res = cli.raw("vault", "show", "cust", as_json=False)
    assert res.exit_code == 0 and "purge protection" in res.stdout
