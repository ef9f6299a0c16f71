"""A misconfigured process is its own problem, never the customer's: a CLI, worker or API server
started without the HSM PIN, with a wrong PIN, or without the token configuration (SOFTHSM2_CONF)
gets exit 6 / HTTP 503 naming the cause and the fix — and changes nothing: the environment stays
enabled, no deletion is scheduled, the policy's health is untouched, and every correctly configured
process keeps serving. Real SoftHSM2 token, real `keyshift` processes, SQLite and PostgreSQL."""

# ruff: noqa: F811 - pytest fixtures imported from servers are parameters here
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from integration.ext_servers import free_port, stop_process, wait_for_port
from keyshift.bootstrap import init_home
from keyshift.control import environments, policies, tenants, tokens, vaults
from keyshift.db.models import AdminAuditEvent, Environment, Policy
from keyshift.jobs.runner import Worker
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore
from keyshift.vaults.external import add_external_vault
from servers import softhsm_token  # noqa: F401 - fixture

PIN_VAR = "KS_LOCAL_FAILURE_PIN"
KEYSHIFT = str(Path(sys.executable).with_name("keyshift"))


def _world(rt: Runtime, tok: Any) -> dict[str, str]:
    """An AES-256 CMK on the token, a healthy policy, one production environment linked, 10 rows."""
    add_external_vault(
        rt,
        "hsm",
        "pkcs11",
        {"module": tok.module, "token_label": tok.label, "pin": {"env": PIN_VAR}},
        soft_delete_days=30,
        purge_protection=True,
    )
    key = f"cmk-{os.urandom(3).hex()}"
    vaults.create_key(rt, "hsm", key, "AES", 256)
    tenants.create_tenant(rt, "contoso")
    pol = policies.create_policy(
        rt, "contoso", "pol", region=rt.settings.default_region, vault="hsm", key=key
    )
    env = environments.create_environment(rt, "contoso", "contoso-prod", env_type="production")
    environments.set_managed(rt, "contoso-prod", True)
    RecordStore(rt, env["id"]).put_many("t", [(f"r{i:03d}", {"n": i}) for i in range(10)])
    assert (
        Worker(rt, poll_seconds=0.01).run_job(start_link(rt, pol["id"], "contoso-prod")["id"]) == "succeeded"
    )
    return {"env": env["id"], "policy": pol["id"], "key": key}


def _shared(rt: Runtime, w: dict[str, str]) -> dict[str, Any]:
    """Everything a misconfigured process must not touch."""
    with rt.transaction() as s:
        e = s.get(Environment, w["env"])
        p = s.get(Policy, w["policy"])
        assert e is not None and p is not None
        actions = dict(
            s.execute(
                select(AdminAuditEvent.action, func.count())
                .where(
                    AdminAuditEvent.action.in_(
                        ["environment.disable", "environment.deletion.scheduled", "policy.health"]
                    )
                )
                .group_by(AdminAuditEvent.action)
            ).all()
        )
        return {
            "env": (e.state, e.state_reason, e.delete_after, e.version),
            "policy": (p.health, list(p.health_reasons or []), p.health_checked_at, p.unhealthy_since),
            "audit": actions,
        }


class Proc:
    def __init__(self, home: Path, db_url: str | None) -> None:
        self.home, self.db_url = home, db_url

    def env(self, case: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "KEYSHIFT_NOW"}
        if case == "no_pin":
            env.pop(PIN_VAR, None)
        elif case == "wrong_pin":
            env[PIN_VAR] = "not-the-pin-0000"
        elif case == "no_token_config":
            env.pop("SOFTHSM2_CONF", None)
        return env

    def run(self, case: str, *args: str) -> subprocess.CompletedProcess[str]:
        base = [KEYSHIFT, "--home", str(self.home), "--json"]
        if self.db_url:
            base += ["--database-url", self.db_url]
        return subprocess.run(
            [*base, *args], env=self.env(case), capture_output=True, text=True, timeout=120, check=False
        )


EXPECTED = {
    "no_pin": (("vault_secret_unavailable",), PIN_VAR),
    "wrong_pin": (("vault_login_failed",), "fix the PIN"),
    # SoftHSM2 falls back to its system config (no such token there), or fails to initialise.
    "no_token_config": (("vault_token_not_found", "vault_module_unavailable"), "SOFTHSM2_CONF"),
}


def _error(res: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("{")]
    assert lines, res.stderr[-2000:]
    return json.loads(lines[-1])["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", ["no_pin", "wrong_pin", "no_token_config"])
def test_a_misconfigured_process_fails_alone_and_changes_nothing(
    tmp_path: Path, db_url: str | None, softhsm_token: Any, case: str
) -> None:
    home = tmp_path / "home"
    init_home(home, database_url=db_url)
    os.environ[PIN_VAR] = softhsm_token.pin  # this test process is a correctly configured one
    rt = Runtime.open(home=home, database_url=db_url, principal="operator:test")
    try:
        w = _world(rt, softhsm_token)
        before = _shared(rt, w)
        proc = Proc(home, db_url)
        codes, hint = EXPECTED[case]

        # A data request from the misconfigured process: exit 6, naming the cause and the fix.
        res = proc.run(case, "data", "get", "contoso-prod", "t", "r001")
        assert res.returncode == 6, (res.stdout, res.stderr[-2000:])
        err = _error(res)
        assert err["code"] in codes and hint in err["message"] and "contoso-prod" in err["message"], err
        assert softhsm_token.pin not in res.stderr
        # The control plane's commands from that process: refused, nothing recorded.
        res = proc.run(case, "policy", "health", "pol")
        assert res.returncode == 6 and _error(res)["code"] in codes, res.stderr[-2000:]
        res = proc.run(case, "policy", "monitor")
        assert res.returncode == 6, res.stderr[-2000:]
        out = json.loads(res.stdout)[w["policy"]]
        assert out["outcome"] == "local" and out["error"]["code"] in codes, out
        assert _shared(rt, w) == before

        if case != "wrong_pin":  # (fewer failed logins on the token)
            # A worker started that way warns loudly at start and disables nobody.
            res = proc.run(case, "worker", "--once")
            assert res.returncode == 0, res.stderr[-2000:]
            assert "WARNING: keyshift worker: vault 'hsm' (pkcs11)" in res.stderr, res.stderr[-2000:]
            assert any(c in res.stderr for c in codes)
            res = proc.run(case, "worker", "--once", "--strict-vaults")
            assert res.returncode == 6 and _error(res)["code"] == "vault_local_error", res.stderr[-2000:]
        assert _shared(rt, w) == before

        # Every correctly configured process keeps serving: another CLI process, and this one.
        ok = proc.run("configured", "data", "get", "contoso-prod", "t", "r001")
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert json.loads(ok.stdout) == {"n": 1}
        assert RecordStore(rt, w["env"]).get("t", "r002") == {"n": 2}
        ok = proc.run("configured", "worker", "--once")
        assert ok.returncode == 0 and "WARNING" not in ok.stderr, ok.stderr[-2000:]
        ok = proc.run("configured", "policy", "health", "pol")
        assert ok.returncode == 0 and json.loads(ok.stdout)["health"] == "healthy", ok.stdout
        after = _shared(rt, w)
        assert after["env"] == before["env"]  # still enabled, no deletion scheduled
        assert after["audit"].get("environment.disable") is None
        assert after["audit"].get("environment.deletion.scheduled") is None
    finally:
        rt.close()


def test_an_api_server_without_the_pin_answers_503_and_disables_nobody(
    tmp_path: Path, softhsm_token: Any
) -> None:
    home = tmp_path / "home"
    init_home(home)
    os.environ[PIN_VAR] = softhsm_token.pin
    rt = Runtime.open(home=home, principal="operator:test")
    server = None
    try:
        w = _world(rt, softhsm_token)
        before = _shared(rt, w)
        token = tokens.create_token(rt, "service", envs=[w["env"]])["token"]
        port = free_port()
        env = Proc(home, None).env("no_pin")
        server = subprocess.Popen(
            [KEYSHIFT, "--home", str(home), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", port, 60, server)  # type: ignore[arg-type]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/environments/contoso-prod/records/t/r001",
            headers={"Authorization": f"Bearer {token}"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)  # noqa: S310 - http to our own server
        assert err.value.code == 503
        body = json.loads(err.value.read())
        assert body["error"]["code"] == "vault_secret_unavailable" and PIN_VAR in body["error"]["message"]
        assert _shared(rt, w) == before
        assert RecordStore(rt, w["env"]).get("t", "r003") == {"n": 3}  # a configured process serves
    finally:
        if server is not None:
            stop_process(server)  # type: ignore[arg-type]
            _, stderr = server.communicate(timeout=30)
        rt.close()
    assert "WARNING: keyshift serve: vault 'hsm' (pkcs11)" in stderr, stderr[-2000:]
