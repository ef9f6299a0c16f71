"""`keyshift env export ENV --out DIR`: the plaintext layout through the normal service, audited,
refused on disabled/locked environments (exit 7) and on a non-empty target (exit 4); a failure
midway leaves neither the target nor a temporary directory behind."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from keyshift.bootstrap import init_home
from keyshift.cli.main import app
from keyshift.control import audit_trail
from keyshift.db.models import Environment
from keyshift.errors import ConflictError
from keyshift.runtime import Runtime
from reference.helpers import decrypt, tree


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, input: str | None = None) -> Any:
        res = self.runner.invoke(app, ["--home", str(self.home), "--json", *args], input=input)
        assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
        if code == 0:
            return json.loads(res.stdout)
        assert res.stdout == ""
        return json.loads(res.stderr)["error"]


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    init_home(home)
    c = Cli(home)
    c("tenant", "create", "contoso")
    c("env", "create", "contoso", "contoso-prod", "--type", "production")
    c("data", "put", "contoso-prod", "accounts", "a1", '{"name": "Fabrikam"}')
    c("data", "put", "contoso-prod", "accounts", "a2", '"plain text"')
    c("audit", "append", "contoso-prod", '{"action": "login"}')
    c("files", "put", "contoso-prod", "img/logo.png", "-", input="png bytes")
    return c


def _trail(cli: Cli) -> list[dict[str, Any]]:
    with Runtime.open(home=cli.home) as rt:
        return [e for e in audit_trail.query(rt) if e["action"] == "env.export"]


def _set_state(cli: Cli, state: str) -> None:
    with Runtime.open(home=cli.home) as rt, rt.transaction() as s:
        s.execute(
            update(Environment)
            .where(Environment.name == "contoso-prod")
            .values(state=state, version=Environment.version + 1)
        )


def test_export_writes_the_plaintext_layout_and_is_audited(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = cli("env", "export", "contoso-prod", "--out", str(out))
    assert result["records"] == {"accounts": 2} and result["audit_events"] == 1 and result["files"] == 1
    assert result["out"] == str(out)
    files = tree(out)
    assert set(files) == {
        "manifest.json",
        "records/accounts.jsonl",
        "audit/events.jsonl",
        "files/img/logo.png",
    }
    assert files["files/img/logo.png"] == b"png bytes"
    lines = [json.loads(x) for x in files["records/accounts.jsonl"].decode().splitlines()]
    assert lines == [
        {"id": "a1", "type": "json", "value": {"name": "Fabrikam"}, "version": 1},
        {"id": "a2", "type": "json", "value": "plain text", "version": 1},
    ]
    (event,) = [json.loads(x) for x in files["audit/events.jsonl"].decode().splitlines()]
    assert event["event"] == {"action": "login"}
    (row,) = _trail(cli)
    assert row["outcome"] == "ok" and row["details"]["records"] == {"accounts": 2}
    assert row["details"]["files"] == 1 and "Fabrikam" not in json.dumps(row)  # counts, never plaintext
    # The reference decryptor, reading the same home without Keyshift, writes the very same bytes.
    ref = decrypt(cli.home, "contoso-prod", tmp_path / "reference")
    assert ref.returncode == 0, ref.stderr
    assert tree(tmp_path / "reference") == files


@pytest.mark.parametrize(
    ("state", "code"), [("disabled", "environment_disabled"), ("locked", "environment_locked")]
)
def test_disabled_or_locked_environment_is_refused_with_exit_7(
    cli: Cli, tmp_path: Path, state: str, code: str
) -> None:
    _set_state(cli, state)
    out = tmp_path / "export"
    assert cli("env", "export", "contoso-prod", "--out", str(out), code=7)["code"] == code
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["home"]
    (row,) = _trail(cli)
    assert row["outcome"] == "error" and code in row["reason"]


def test_non_empty_target_is_refused_with_exit_4_and_left_alone(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert cli("env", "export", "contoso-prod", "--out", str(out), code=4)["code"] == "export_target_exists"
    assert tree(out) == {"mine.txt": b"keep me"}
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert (
        cli("env", "export", "contoso-prod", "--out", str(a_file), code=4)["code"] == "export_target_exists"
    )
    assert a_file.read_text() == "x"
    assert [r["outcome"] for r in _trail(cli)] == ["error", "error"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("env", "export", "contoso-prod", "--out", str(empty))["files"] == 1  # an empty dir is fine


def test_a_tampered_record_fails_the_export_with_nothing_left_behind(cli: Cli, tmp_path: Path) -> None:
    with sqlite3.connect(cli.home / "state.db") as conn:
        (blob,) = conn.execute("SELECT value FROM data_records WHERE record_id = 'a2'").fetchone()
        bad = bytearray(blob)
        bad[-1] ^= 1
        conn.execute("UPDATE data_records SET value = ? WHERE record_id = 'a2'", (bytes(bad),))
    out = tmp_path / "export"
    err = cli("env", "export", "contoso-prod", "--out", str(out), code=1)
    assert err["code"] == "integrity_error" and "accounts/a2" in err["message"]
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["home"]
    (row,) = _trail(cli)
    assert row["outcome"] == "error"


def test_unknown_environment_is_not_found(cli: Cli, tmp_path: Path) -> None:
    assert cli("env", "export", "nope", "--out", str(tmp_path / "x"), code=3)["code"]
    assert not (tmp_path / "x").exists()


def test_audit_paging_keeps_every_event_once_in_time_then_id_order(
    sqlite_rt: Runtime, clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events are read page by page; a page's last instant is re-read whole, so events sharing a
    timestamp across a page boundary are neither lost nor doubled (page size shrunk to 4 here)."""
    from keyshift.features import export
    from keyshift.stores.audit import AuditLog
    from migrate.helpers import make_env, make_tenant

    rt = sqlite_rt
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "contoso-prod")
    log = AuditLog(rt, env_id)
    written = []
    for i, step in enumerate([0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0]):  # runs of equal timestamps
        clock.advance(seconds=step)
        written.append((clock.now(), log.append({"i": i})))
    monkeypatch.setattr(export, "AUDIT_PAGE", 4)
    export.export_environment(rt, env_id, tmp_path / "out")
    lines = [json.loads(x) for x in (tmp_path / "out" / "audit" / "events.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [eid for _, eid in sorted(written)]
    # Three events at one instant cannot be paged with pages of 2: refused, nothing written.
    monkeypatch.setattr(export, "AUDIT_PAGE", 2)
    clock.advance(seconds=5)
    for i in range(3):
        log.append({"same": i})
    with pytest.raises(ConflictError) as err:
        export.export_environment(rt, env_id, tmp_path / "again")
    assert err.value.code == "export_unpageable" and not (tmp_path / "again").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home-sqlite", "out"]  # no temp dir left
