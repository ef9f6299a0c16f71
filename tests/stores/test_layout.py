"""Layout: which backend holds each kind, the SQL-only rule, and the transition union."""

from __future__ import annotations

import dataclasses

import pytest

from keyshift.errors import ConflictError
from keyshift.stores.envstate import EnvView
from keyshift.stores.layout import choose, layout, union

BASE = EnvView(
    id="env_1",
    name="e",
    tenant_id="ten_1",
    state="enabled",
    stores={},
    features=(),
    enc_mode="platform",
    sql_restriction=False,
    kek_vault_id="v",
    kek_key_name="k",
    kek_key_version=None,
    kek_identity="i",
)


def env(**kw: object) -> EnvView:
    return dataclasses.replace(BASE, **kw)  # type: ignore[arg-type]


def test_defaults_for_ordinary_and_sql_restricted_environments() -> None:
    assert layout(env()) == {"records": "sql", "audit": "document", "files": "file_storage"}
    assert layout(env(sql_restriction=True)) == {"records": "sql", "audit": "sql", "files": "sql"}
    # A migrated (CMK) environment of a still-restricted tenant has left SQL.
    assert layout(env(sql_restriction=True, enc_mode="cmk"))["audit"] == "document"


def test_explicit_stores_win_and_unknown_backends_are_refused() -> None:
    assert choose(env(stores={"audit": "sql"}), "audit").backend == "sql"
    with pytest.raises(ConflictError):
        choose(env(stores={"files": "floppy"}), "files")
    with pytest.raises(ConflictError):
        choose(env(stores={"records": "document"}), "records")


def test_transition_names_the_legacy_store() -> None:
    c = choose(env(stores={"audit": "document", "audit_from": "sql"}), "audit")
    assert (c.backend, c.legacy) == ("document", "sql")
    assert choose(env(stores={"files": "sql", "files_from": "sql"}), "files").legacy is None
    assert choose(env(stores={"files": "file_storage"}), "files").legacy is None


def test_union_new_first_then_legacy_without_duplicates() -> None:
    new = [("b", "new"), ("c", "new")]
    old = [("a", "old"), ("b", "old")]
    assert union(new, old, key=lambda x: x[0]) == [("b", "new"), ("c", "new"), ("a", "old")]
