"""`/healthz` and `/readyz`: alive vs ready; not ready when the state database is unreachable or its
schema is gone, or when a needed vault cannot be opened (its credentials are missing)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from keyshift.api.app import create_app
from keyshift.db.engine import make_engine
from keyshift.runtime import Runtime
from keyshift.vaults.master_key import MASTER_KEY_FILE
from servers import softhsm_token  # noqa: F401 - fixture


def _client(rt: Runtime, **kw: Any) -> TestClient:
    app = create_app(rt, **kw)
    app.state.readiness.cache_seconds = 0  # every probe runs the checks
    return TestClient(app, raise_server_exceptions=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ready_when_database_schema_and_platform_vault_are_fine(rt: Runtime) -> None:
    with _client(rt) as c:
        alive = c.get("/healthz")
        assert alive.status_code == 200 and alive.json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready" and body["failed"] == []
        names = [chk["name"] for chk in body["checks"]]
        assert names == ["database", "schema", f"vault:{rt.settings.platform_vault}"]


def test_not_ready_when_the_database_is_unreachable(rt: Runtime) -> None:
    """A runtime whose database URL points at a port nobody listens on (a stopped PostgreSQL)."""
    dead = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/test?connect_timeout=2")
    down = Runtime(rt.settings, rt.home, dead, rt.clock, "api:server")
    with _client(down) as c:
        assert c.get("/healthz").status_code == 200  # alive all the same
        resp = c.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "not_ready"
    assert "database" in body["failed"]
    assert {"name": "database", "ok": False, "code": "database_unreachable"} in body["checks"]
    assert "postgres" not in resp.text and "127.0.0.1" not in resp.text  # no URL in the answer
    dead.dispose()


def test_not_ready_when_the_schema_is_dropped(pg_url: str, tmp_path: Path) -> None:
    from keyshift.bootstrap import init_home

    init_home(tmp_path / "h", database_url=pg_url)
    rt = Runtime.open(home=tmp_path / "h", database_url=pg_url, principal="api:server")
    try:
        with _client(rt) as c:
            assert c.get("/readyz").status_code == 200
            schema = pg_url.rsplit("%3D", 1)[1]
            admin = create_engine(pg_url.split("?")[0])
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))  # the fixture drops it again
            admin.dispose()
            resp = c.get("/readyz")
        assert resp.status_code == 503
        body = resp.json()
        assert "schema" in body["failed"] and "database" not in body["failed"]
        assert {"name": "schema", "ok": False, "code": "schema_out_of_date"} in body["checks"]
    finally:
        rt.close()


def test_not_ready_when_a_needed_vaults_credentials_are_missing(rt: Runtime) -> None:
    """The local vault's credential is the home's master key: without it no key opens."""
    key = rt.home.path / MASTER_KEY_FILE
    hidden = key.with_name("master.key.away")
    key.rename(hidden)
    try:
        with _client(rt) as c:
            resp = c.get("/readyz")
            assert resp.status_code == 503
            body = resp.json()
            vault = f"vault:{rt.settings.platform_vault}"
            assert body["failed"] == [vault]
            assert {"name": vault, "ok": False, "code": "master_key_missing"} in body["checks"]
            assert str(rt.home.path) not in resp.text  # codes only, no paths or messages
            hidden.rename(key)
            assert c.get("/readyz").status_code == 200  # back once the key is back
    finally:
        if hidden.exists():
            hidden.rename(key)


def test_a_required_vault_that_does_not_exist_is_not_ready(rt: Runtime) -> None:
    with _client(rt, require_vaults=("customer-kv",)) as c:
        resp = c.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["failed"] == ["vault:customer-kv"]
    assert {"name": "vault:customer-kv", "ok": False, "code": "vault_not_found"} in resp.json()["checks"]


def test_readiness_is_cached_between_probes(rt: Runtime) -> None:
    app = create_app(rt)
    calls = []
    probe = app.state.readiness
    real = probe.run
    probe.run = lambda: calls.append(1) or real()  # type: ignore[method-assign]
    with TestClient(app) as c:
        for _ in range(3):
            assert c.get("/readyz").status_code == 200
    assert len(calls) == 1


def test_not_ready_when_an_hsm_pin_is_missing(
    sqlite_rt: Runtime,
    softhsm_token: Any,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real SoftHSM2 token required with `--require-vault`; its PIN is read from a variable."""
    from keyshift.cli.vault_external import build_config
    from keyshift.vaults.external import add_external_vault

    rt = sqlite_rt
    opts: dict[str, Any] = dict.fromkeys(
        ("pin_file", "host", "port", "cert", "key", "ca", "endpoint_url", "region")
    )
    config = build_config(
        "pkcs11",
        module=Path(softhsm_token.module),
        token_label=softhsm_token.label,
        pin_env="KS_READYZ_TEST_PIN",
        **opts,
    )
    add_external_vault(rt, "hsm", "pkcs11", config, soft_delete_days=90, purge_protection=True)
    monkeypatch.setenv("KS_READYZ_TEST_PIN", softhsm_token.pin)
    with _client(rt, require_vaults=("hsm",)) as c:
        assert c.get("/readyz").status_code == 200
        monkeypatch.delenv("KS_READYZ_TEST_PIN")
        resp = c.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["failed"] == ["vault:hsm"]
    (check,) = [chk for chk in resp.json()["checks"] if chk["name"] == "vault:hsm"]
    assert check["code"] == "vault_secret_unavailable", check
    assert softhsm_token.pin not in resp.text
