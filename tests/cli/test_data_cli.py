"""CLI: `data`, `audit`, `files` — JSON output, error JSON on stderr, exit codes, state unchanged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from keyshift.bootstrap import init_home
from keyshift.cli.main import app
from keyshift.db.models import Environment
from keyshift.runtime import Runtime


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = CliRunner()

    def raw(self, *args: str, input: bytes | str | None = None, json_out: bool = True) -> Any:
        base = ["--home", str(self.home)] + (["--json"] if json_out else [])
        return self.runner.invoke(app, [*base, *args], input=input, env={"KEYSHIFT_NOW": ""})

    def __call__(self, *args: str, code: int = 0, input: bytes | str | None = None) -> Any:
        res = self.raw(*args, input=input)
        assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
        if code == 0:
            return json.loads(res.stdout)
        assert res.stdout == ""
        return json.loads(res.stderr)["error"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    home = tmp_path_factory.mktemp("data-cli") / "home"
    init_home(home)
    c = Cli(home)
    c("tenant", "create", "contoso")
    c("env", "create", "contoso", "contoso-prod", "--type", "production")
    c("tenant", "create", "legacy", "--byok")
    c("env", "create", "legacy", "legacy-prod", "--type", "production")
    yield c


def _set_state(cli: Cli, env: str, state: str) -> None:
    with Runtime.open(home=cli.home) as rt, rt.transaction() as s:
        s.execute(
            update(Environment)
            .where(Environment.name == env)
            .values(state=state, version=Environment.version + 1)
        )


def test_records_put_get_list_delete(cli: Cli) -> None:
    assert cli("data", "put", "contoso-prod", "accounts", "a1", '{"name": "Fabrikam"}') == {
        "table": "accounts",
        "id": "a1",
        "version": 1,
    }
    cli("data", "put", "contoso-prod", "accounts", "a2", "[1, 2, 3]")
    assert cli("data", "get", "contoso-prod", "accounts", "a1") == {"name": "Fabrikam"}
    rows = cli("data", "list", "contoso-prod", "accounts")
    assert [(r["id"], r["value"], r["version"]) for r in rows] == [
        ("a1", {"name": "Fabrikam"}, 1),
        ("a2", [1, 2, 3], 1),
    ]
    err = cli("data", "put", "contoso-prod", "accounts", "a1", '{"v": 2}', "--expected-version", "7", code=4)
    assert err["code"] == "version_conflict"
    cli("data", "delete", "contoso-prod", "accounts", "a2")
    assert cli("data", "get", "contoso-prod", "accounts", "a2", code=3)["code"] == "record_not_found"
    human = cli.raw("data", "get", "contoso-prod", "accounts", "a1", json_out=False)
    assert human.exit_code == 0 and "Fabrikam" in human.stdout


BAD_INPUT = [
    (("data", "put", "contoso-prod", "t", "r", "{not json"), "invalid_json", 2),
    (("data", "put", "contoso-prod", "t", "r", "NaN"), "invalid_json", 2),
    (("data", "put", "contoso-prod", "t", "../r", "1"), "invalid_id", 2),
    (("data", "put", "nowhere", "t", "r", "1"), "environment_not_found", 3),
    (("data", "get", "contoso-prod", "no_such_table", "r"), "table_not_found", 3),
    (("audit", "append", "contoso-prod", "[1]"), "invalid_value", 2),
    (("audit", "append", "contoso-prod", "oops"), "invalid_json", 2),
    (("audit", "list", "contoso-prod", "--since", "yesterday"), "invalid_argument", 2),
    (("files", "put", "contoso-prod", "../escape", "-"), "invalid_path", 2),
    (("files", "get", "contoso-prod", "missing.bin", "-o", "x"), "file_not_found", 3),
    (("files", "get", "contoso-prod", "missing.bin"), "invalid_argument", 2),
]


def test_bad_input_exit_codes_and_nothing_written(cli: Cli) -> None:
    cli("data", "put", "contoso-prod", "t", "keep", '"kept"')

    def state() -> tuple[Any, ...]:
        return (
            cli("data", "list", "contoso-prod", "t"),
            cli("audit", "list", "contoso-prod"),
            cli("files", "list", "contoso-prod"),
        )

    before = state()
    for args, code, exit_code in BAD_INPUT:
        err = cli(*args, code=exit_code, input=b"data")
        assert err["code"] == code, (args, err)
    assert state() == before


def test_audit_append_and_list(cli: Cli) -> None:
    eid = cli("audit", "append", "legacy-prod", '{"action": "login", "user": "ana"}')["id"]
    events = cli("audit", "list", "legacy-prod", "--limit", "10")
    assert [e["id"] for e in events][-1] == eid
    assert events[-1]["event"] == {"action": "login", "user": "ana"}
    assert cli("audit", "list", "legacy-prod", "--since", "2999-01-01T00:00:00Z") == []


@pytest.mark.parametrize("env", ["contoso-prod", "legacy-prod"])
def test_files_put_get_list_from_file_and_stdin(cli: Cli, env: str, tmp_path: Path) -> None:
    src = tmp_path / "logo.png"
    payload = bytes(range(256)) * 5000
    src.write_bytes(payload)
    put = cli("files", "put", env, "img/logo.png", str(src))
    assert put["size"] == len(payload) and put["store"] == ("sql" if env == "legacy-prod" else "file_storage")
    cli("files", "put", env, "notes/readme.txt", "-", input=b"from stdin")
    streamed = cli.raw("files", "get", env, "img/logo.png", json_out=False)
    assert streamed.exit_code == 0 and streamed.stdout_bytes == payload
    out = tmp_path / "out.txt"
    assert cli("files", "get", env, "notes/readme.txt", "-o", str(out))["size"] == 10
    assert out.read_bytes() == b"from stdin"
    listed = {f["path"]: f["size"] for f in cli("files", "list", env)}
    assert listed["img/logo.png"] == len(payload) and listed["notes/readme.txt"] == 10
    assert cli("files", "put", env, "x", str(tmp_path / "absent"), code=2)["code"] == "invalid_file"


@pytest.mark.parametrize(
    ("state", "code"), [("disabled", "environment_disabled"), ("locked", "environment_locked")]
)
def test_disabled_or_locked_environment_refuses_everything_with_exit_7(
    cli: Cli, state: str, code: str
) -> None:
    cli("data", "put", "contoso-prod", "t", "r", "1")
    _set_state(cli, "contoso-prod", state)
    try:
        for args in (
            ("data", "get", "contoso-prod", "t", "r"),
            ("data", "put", "contoso-prod", "t", "r", "2"),
            ("data", "list", "contoso-prod", "t"),
            ("audit", "append", "contoso-prod", "{}"),
            ("audit", "list", "contoso-prod"),
            ("files", "list", "contoso-prod"),
            ("files", "get", "contoso-prod", "img/logo.png", "-o", "/tmp/never-written"),
        ):
            assert cli(*args, code=7)["code"] == code
    finally:
        _set_state(cli, "contoso-prod", "enabled")
    assert cli("data", "get", "contoso-prod", "t", "r") == 1


def test_expected_version_past_int64_is_a_usage_error_and_lists_say_when_a_page_is_full(cli: Cli) -> None:
    cli("data", "put", "contoso-prod", "versions", "v1", '{"v": 1}')
    for big in (str(1 << 63), str(1 << 70)):
        err = cli(
            "data", "put", "contoso-prod", "versions", "v1", '{"v": 2}', "--expected-version", big, code=2
        )
        assert err["code"] == "invalid_version"
        err = cli("data", "delete", "contoso-prod", "versions", "v1", "--expected-version", big, code=2)
        assert err["code"] == "invalid_version"
    assert cli("data", "get", "contoso-prod", "versions", "v1") == {"v": 1}
    cli("data", "put", "contoso-prod", "versions", "v2", '{"v": 2}')
    full = cli.raw("data", "list", "contoso-prod", "versions", "--limit", "1")
    assert full.exit_code == 0 and [r["id"] for r in json.loads(full.stdout)] == ["v1"]
    assert "--after v1" in full.stderr
    last = cli.raw("data", "list", "contoso-prod", "versions", "--after", "v1", "--limit", "5")
    assert [r["id"] for r in json.loads(last.stdout)] == ["v2"] and "--after" not in last.stderr


def test_files_get_to_a_file_never_leaves_a_partial_file_when_a_late_segment_fails(
    cli: Cli, tmp_path: Path
) -> None:
    from keyshift.stores.file_backends import backend

    payload = bytes(range(256)) * 9000  # > 2 segments: the first ones pass, the last fails
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    cli("files", "put", "contoso-prod", "late/fail.bin", str(src))
    with Runtime.open(home=cli.home) as rt:
        env_id = (
            rt.engine.connect()
            .exec_driver_sql("SELECT id FROM environments WHERE name = 'contoso-prod'")
            .scalar_one()
        )
        target = backend(rt, "file_storage").target_path(env_id, "late/fail.bin")  # type: ignore[attr-defined]
    raw = bytearray(target.read_bytes())
    raw[-3] ^= 0x80
    target.write_bytes(bytes(raw))
    out_dir = tmp_path / "dl"
    out_dir.mkdir()
    out = out_dir / "fail.bin"
    out.write_bytes(b"the previous download")
    err = cli("files", "get", "contoso-prod", "late/fail.bin", "-o", str(out), code=1)
    assert err["code"] == "integrity_error"
    assert out.read_bytes() == b"the previous download"  # untouched, not half-overwritten
    assert [p.name for p in out_dir.iterdir()] == ["fail.bin"]  # no temp file left behind
