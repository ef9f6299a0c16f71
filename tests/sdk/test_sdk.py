"""The Python SDK over the service layer: keyshift.open(), environments, records/audit/files, errors,
fail closed within the state refresh bound when another process disables the environment."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyshift
from keyshift.bootstrap import init_home

SET_STATE = """
import sys
from sqlalchemy import create_engine, text
engine = create_engine(sys.argv[1])
with engine.begin() as conn:
    conn.execute(text("UPDATE environments SET state = :s, version = version + 1 WHERE name = :n"),
                 {"s": sys.argv[3], "n": sys.argv[2]})
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("sdk") / "home"
    init_home(path)
    from keyshift.control.environments import create_environment
    from keyshift.control.tenants import create_tenant
    from keyshift.runtime import Runtime

    with Runtime.open(home=path) as rt:
        create_tenant(rt, "contoso")
        create_environment(rt, "contoso", "contoso-prod", env_type="production")
    yield path


def test_open_environment_records_audit_files(home: Path) -> None:
    with keyshift.open(home=home) as ks:
        env = ks.environment("contoso-prod")
        assert ks.environment(env.id) is env
        env.records.put("accounts", "a1", {"name": "Fabrikam"})
        assert env.records.get("accounts", "a1") == {"name": "Fabrikam"}
        env.records.put_many("accounts", [(f"b{i}", {"i": i}) for i in range(10)])
        assert len(list(env.records.scan("accounts"))) == 11  # the whole table, as an iterator
        eid = env.audit.append({"action": "export"})
        assert env.audit.query(limit=5)[-1]["id"] == eid
        env.files.put("img/logo.png", io.BytesIO(b"PNG..."))
        with env.files.open("img/logo.png") as f:
            assert f.read() == b"PNG..."
        assert env.files.get("img/logo.png") == b"PNG..."
        assert env.files.list() == [{"path": "img/logo.png", "size": 6}]
        assert env.stores() == {"records": "sql", "audit": "document", "files": "file_storage"}
        env.files.delete("img/logo.png")
    with pytest.raises(ValueError):
        ks.environment("contoso-prod")


def test_errors_are_the_keyshift_family(home: Path) -> None:
    with keyshift.open(home=home) as ks:
        with pytest.raises(keyshift.NotFoundError):
            ks.environment("nope")
        env = ks.environment("contoso-prod")
        with pytest.raises(keyshift.UsageError):
            env.records.put("t", "../x", 1)
        with pytest.raises(keyshift.NotFoundError):
            env.files.get("absent.bin")
        with pytest.raises(keyshift.KeyshiftError):
            env.records.put("t", "r", {1, 2})


def test_another_process_disabling_the_environment_is_seen_within_the_refresh_bound(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 0.5
    monkeypatch.setenv("KEYSHIFT_STATE_REFRESH_SECONDS", str(bound))
    url = f"sqlite:///{home / 'state.db'}"
    with keyshift.open(home=home) as ks:
        env = ks.environment("contoso-prod")
        env.records.put("t", "r", 1)
        subprocess.run([sys.executable, "-c", SET_STATE, url, "contoso-prod", "disabled"], check=True)
        changed = time.monotonic()
        try:
            refused_at = None
            while time.monotonic() - changed < bound + 2:
                try:
                    env.records.get("t", "r")
                except keyshift.EnvironmentUnavailableError as err:
                    assert err.code == "environment_disabled" and err.exit_code == 7
                    refused_at = time.monotonic()
                    break
                time.sleep(0.02)
            assert refused_at is not None and refused_at - changed <= bound + 0.3
            for call in (
                lambda: env.records.put("t", "r", 2),
                lambda: env.audit.append({"x": 1}),
                lambda: env.files.list(),
            ):
                with pytest.raises(keyshift.EnvironmentUnavailableError):
                    call()
        finally:
            subprocess.run([sys.executable, "-c", SET_STATE, url, "contoso-prod", "enabled"], check=True)
        time.sleep(bound)
        assert env.records.get("t", "r") == 1
