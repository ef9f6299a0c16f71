"""CLI: `key ...` — lifecycle through the CLI, JSON shapes, exit codes, error JSON, state unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_vault_support import VaultCli
from local_support import snapshot

from keyshift.control import audit_trail
from keyshift.db.models import VaultRecord
from keyshift.db.types import new_id
from keyshift.runtime import Runtime
from keyshift.vaults import registry


@pytest.fixture
def cli(rt: Runtime, home: Path, db_url: str | None) -> VaultCli:
    c = VaultCli(home, db_url)
    c("vault", "create", "cust", "--soft-delete-days", "7", "--purge-protection")
    return c


@pytest.fixture
def sqlite_cli(sqlite_rt: Runtime) -> VaultCli:
    """The error-contract tests do not depend on the SQL backend; they run on SQLite only."""
    c = VaultCli(sqlite_rt.home.path, None)
    c("vault", "create", "cust", "--soft-delete-days", "7", "--purge-protection")
    return c


def test_key_lifecycle_through_the_cli(cli: VaultCli, rt: Runtime) -> None:
    k = cli("key", "create", "cust", "k1", "--type", "RSA", "--size", "2048", "--expires", "2030-01-01")
    assert (k["type"], k["size"], k["current_version"], k["enabled"]) == ("RSA", 2048, "1", True)
    assert k["versions"][0]["expires"].startswith("2030-01-01T00:00:00")
    nb = cli(
        "key", "create", "cust", "k0", "--type", "AES", "--size", "256", "--not-before", "2026-02-01T08:00Z"
    )
    assert (
        nb["versions"][0]["not_before"].startswith("2026-02-01T08:00:00")
        and nb["versions"][0]["expires"] is None
    )
    g = cli("key", "grant", "cust", "k1", "--identity", "pol-1", "--permissions", "get, wrapKey,unwrapKey")
    assert g["permissions"] == ["get", "unwrapKey", "wrapKey"]
    assert cli("key", "rotate", "cust", "k1")["current_version"] == "2"
    shown = cli("key", "disable", "cust", "k1", "--version", "1")
    assert [v["enabled"] for v in shown["versions"]] == [False, True] and shown["enabled"] is True
    assert cli("key", "enable", "cust", "k1", "--version", "1")["versions"][0]["enabled"] is True
    assert cli("key", "disable", "cust", "k1")["state"] == "disabled"
    assert cli("key", "enable", "cust", "k1")["state"] == "enabled"
    show = cli("key", "show", "cust", "k1")
    assert show["grants"] == [{"identity": "pol-1", "permissions": ["get", "unwrapKey", "wrapKey"]}]
    assert {"versions", "enabled", "grants"} <= set(show)
    assert not {"material", "private_key", "secret"} & set(show)
    assert [r["name"] for r in cli("key", "list", "cust")] == ["k0", "k1"]
    deleted = cli("key", "delete", "cust", "k1")
    assert deleted["deleted"] is True and deleted["state"] == "deleted" and deleted["purge_after"]
    err = cli("key", "purge", "cust", "k1", code=4)
    assert err["code"] == "purge_protected"
    assert cli("key", "recover", "cust", "k1")["deleted"] is False
    cli("key", "revoke-grant", "cust", "k1", "--identity", "pol-1")
    assert cli("key", "show", "cust", "k1")["grants"] == []
    actions = [(e["action"], e["outcome"]) for e in audit_trail.query(rt)]
    for action in (
        "key.create",
        "key.grant",
        "key.rotate",
        "key.disable",
        "key.enable",
        "key.delete",
        "key.recover",
        "key.revoke_grant",
    ):
        assert (action, "ok") in actions, action
    assert ("key.purge", "error") in actions
    # Human output works too (no JSON).
    res = cli.raw("key", "show", "cust", "k1", as_json=False)
    assert res.exit_code == 0 and "cust/k1" in res.stdout


BAD = [
    (("key", "create", "cust", "k2", "--type", "RSA", "--size", "1024"), 2, "invalid_argument"),
    (("key", "create", "cust", "k2", "--type", "AES", "--size", "128"), 2, "invalid_argument"),
    (("key", "create", "cust", "k2", "--type", "EC", "--size", "256"), 2, "invalid_argument"),
    (
        ("key", "create", "cust", "k2", "--type", "AES", "--size", "256", "--expires", "soon"),
        2,
        "invalid_argument",
    ),
    (
        (
            "key",
            "create",
            "cust",
            "k2",
            "--type",
            "AES",
            "--size",
            "256",
            "--not-before",
            "2030-01-01",
            "--expires",
            "2029-01-01",
        ),
        2,
        "invalid_argument",
    ),
    (("key", "create", "nope", "k2", "--type", "AES", "--size", "256"), 3, "vault_not_found"),
    (("key", "create", "cust", "k1", "--type", "AES", "--size", "256"), 4, "already_exists"),
    (("key", "rotate", "cust", "missing"), 3, "key_not_found"),
    (("key", "show", "cust", "missing"), 3, "key_not_found"),
    (("key", "disable", "cust", "k1", "--version", "7"), 3, "key_not_found"),
    (("key", "grant", "cust", "k1", "--identity", "x", "--permissions", "get,bogus"), 2, "invalid_argument"),
    (("key", "grant", "cust", "k1", "--identity", "x", "--permissions", ""), 2, "invalid_argument"),
    (("key", "revoke-grant", "cust", "k1", "--identity", "nobody"), 3, "grant_not_found"),
    (("key", "purge", "cust", "k1"), 4, "key_not_deleted"),
    (("key", "recover", "cust", "k1"), 4, "key_not_deleted"),
    (("key", "list", "nope"), 3, "vault_not_found"),
]


def test_bad_input_gives_clear_errors_and_changes_nothing(sqlite_cli: VaultCli, sqlite_rt: Runtime) -> None:
    cli, rt = sqlite_cli, sqlite_rt
    cli("key", "create", "cust", "k1", "--type", "AES", "--size", "256")
    before = snapshot(rt)
    for args, exit_code, code in BAD:
        err = cli(*args, code=exit_code)
        assert err["code"] == code, (args, err)
        assert err["message"]
    assert snapshot(rt) == before
    refused = [e for e in audit_trail.query(rt) if e["outcome"] == "error"]
    # Every refusal that reached the service layer left an audit record (date parsing is the CLI's).
    assert sum(e["action"] == "key.create" for e in refused) == 6, "\n".join(
        e["action"] + " " + e["reason"] for e in refused
    )
    assert {"key.rotate", "key.disable", "key.grant", "key.revoke_grant", "key.purge", "key.recover"} <= {
        e["action"] for e in refused
    }


class _FakeReadOnlyVault:
    """FAKE provider for one test: a KeyVault without key management (no real provider lacks it here)."""

    kind = "fake-readonly"

    def __init__(self, name: str) -> None:
        self.name = name

    def info(self) -> object:
        from keyshift.vaults.base import VaultInfo

        return VaultInfo(self.name, self.kind, None, False)

    def describe(self, key: object) -> object:
        raise NotImplementedError

    def wrap(self, *a: object, **k: object) -> object:
        raise NotImplementedError

    def unwrap(self, *a: object, **k: object) -> object:
        raise NotImplementedError

    def check_access(self, *a: object, **k: object) -> object:
        raise NotImplementedError


def open_fake(rt: Runtime, record: VaultRecord) -> _FakeReadOnlyVault:
    return _FakeReadOnlyVault(record.name)


def test_key_commands_need_a_vault_that_manages_keys(
    sqlite_cli: VaultCli, sqlite_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli, rt = sqlite_cli, sqlite_rt
    monkeypatch.setitem(registry.PROVIDERS, "fake-readonly", f"{__name__}:open_fake")
    with rt.transaction() as s:
        s.add(
            VaultRecord(
                id=new_id("vlt"), name="ro", kind="fake-readonly", config={}, created_at=rt.clock.now()
            )
        )
    err = cli("key", "create", "ro", "k", "--type", "AES", "--size", "256", code=4)
    assert err["message"] == "vault kind fake-readonly does not support key management"
    shown = cli("vault", "show", "ro")
    assert shown["key_management"] is False and shown["keys"] == [] and shown["reachable"] is True
