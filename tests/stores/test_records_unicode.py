"""A JSON value holding a lone surrogate (no UTF-8 form) is bad input, not an internal error: a
UsageError (exit 2, code invalid_value) that does not quote the value, with nothing written —
through the records store (both backends), the SDK and the CLI `data put`; audit events alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keyshift
from keyshift.bootstrap import init_home
from keyshift.cli.main import app
from keyshift.errors import UsageError
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore, encode_value
from stores.helpers import make_env, snapshot

DATA = ("data_records", "deks", "dek_wraps", "search_postings")
BAD_VALUES: list[Any] = [
    "\ud800",
    {"name": "ok", "nested": ["fine", "bad \udfff tail"]},
    {"\udc00key": 1},
]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_encode_value_refuses_a_lone_surrogate(value: Any) -> None:
    with pytest.raises(UsageError) as err:
        encode_value(value)
    assert err.value.code == "invalid_value" and err.value.exit_code == 2
    assert "surrogate" in str(err.value)
    # The message names the problem, never the offending character or its position.
    assert "\\ud" not in str(err.value) and "position" not in str(err.value)


def test_store_writes_nothing(rt: Runtime) -> None:
    store = RecordStore(rt, make_env(rt))
    store.put("t", "keep", {"v": 1})
    before = snapshot(rt, *DATA)
    for value in BAD_VALUES:
        with pytest.raises(UsageError) as err:
            store.put("t", "keep", value)
        assert err.value.code == "invalid_value"
        with pytest.raises(UsageError):
            store.put("t", "new", value)
        # One bad value refuses the whole batch: the good items before it are not written either.
        with pytest.raises(UsageError):
            store.put_many("t", [("good1", 1), ("bad", value), ("good2", 2)])
    assert snapshot(rt, *DATA) == before
    assert store.get("t", "keep") == {"v": 1}
    assert [r.id for r in store.scan("t")] == ["keep"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("surrogate") / "home"
    init_home(path)
    from keyshift.control.environments import create_environment
    from keyshift.control.tenants import create_tenant

    with Runtime.open(home=path) as rt:
        create_tenant(rt, "contoso")
        create_environment(rt, "contoso", "contoso-prod", env_type="production")
    yield path


def _records(home: Path) -> list[tuple[Any, ...]]:
    with Runtime.open(home=home) as rt:
        return snapshot(rt, "data_records")["data_records"]


def test_sdk_put_is_a_usage_error_and_writes_nothing(home: Path) -> None:
    with keyshift.open(home=home) as ks:
        env = ks.environment("contoso-prod")
        env.records.put("accounts", "a1", {"name": "Fabrikam"})
        before = _records(home)
        for value in BAD_VALUES:
            with pytest.raises(keyshift.UsageError) as err:
                env.records.put("accounts", "a1", value)
            assert err.value.code == "invalid_value"
            with pytest.raises(keyshift.UsageError):
                env.records.put_many("accounts", [("a2", 2), ("a3", value)])
        assert _records(home) == before
        assert env.records.get("accounts", "a1") == {"name": "Fabrikam"}
        assert [r.id for r in env.records.scan("accounts")] == ["a1"]


@pytest.mark.parametrize("text", ['"\\ud800"', '{"k": ["ok", "\\udfff"]}', '{"\\udc00": 1}'])
def test_cli_data_put_exits_2_and_writes_nothing(home: Path, text: str) -> None:
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, ["--home", str(home), "--json", *args], env={"KEYSHIFT_NOW": ""})

    ok = cli("data", "put", "contoso-prod", "cli", "keep", '"kept"')
    assert ok.exit_code == 0, ok.stderr
    before = _records(home)
    res = cli("data", "put", "contoso-prod", "cli", "keep", text)
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr)
    assert res.stdout == ""
    error = json.loads(res.stderr)["error"]
    assert error["code"] == "invalid_value" and "surrogate" in error["message"]
    res = cli("data", "put", "contoso-prod", "cli", "other", text)
    assert res.exit_code == 2 and json.loads(res.stderr)["error"]["code"] == "invalid_value"
    assert _records(home) == before
    got = cli("data", "get", "contoso-prod", "cli", "keep")
    assert got.exit_code == 0 and json.loads(got.stdout) == "kept"


def test_audit_append_refuses_a_lone_surrogate_without_quoting_it(rt: Runtime) -> None:
    from keyshift.stores.audit import AuditLog

    env_id = make_env(rt)
    log = AuditLog(rt, env_id)
    log.append({"action": "login"})
    before = log.query(limit=100)
    for value in BAD_VALUES:
        with pytest.raises(UsageError) as err:
            log.append({"action": value} if not isinstance(value, dict) else value)
        assert err.value.code == "invalid_value" and "surrogate" in str(err.value)
        assert "\\ud" not in str(err.value) and "position" not in str(err.value)
    assert log.query(limit=100) == before
