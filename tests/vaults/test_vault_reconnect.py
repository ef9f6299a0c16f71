"""`vault reconnect`: an external vault's connection settings change only once they are proven —
one data key of each key version in use unwraps through them — and every runtime picks them up.
Real parts: moto's KMS server (two of them on different ports serve the same in-process KMS, so the
second is "the vault at its new address"; another region holds none of the keys) and the CLI in a
subprocess for bad input."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keyshift.control import environments, tenants, vaults
from keyshift.control.health import check_policy
from keyshift.control.policies import create_policy
from keyshift.control.vault_reconnect import reconnect_vault
from keyshift.db.models import AdminAuditEvent
from keyshift.errors import ConflictError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.keys import flush
from keyshift.vaults.registry import find_vault_record
from revocation.helpers import put_rows, read_all
from servers import aws_test_env  # noqa: F401 - fixture


def _moto() -> Any:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server


def _url(server: Any) -> str:
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def _audit(rt: Runtime, action: str) -> list[AdminAuditEvent]:
    with rt.transaction() as s:
        rows = list(s.scalars(select(AdminAuditEvent).where(AdminAuditEvent.action == action)))
        for r in rows:
            s.expunge(r)
        return rows


@pytest.fixture
def linked(sqlite_rt: Runtime, aws_test_env: dict[str, str]) -> Any:  # noqa: F811
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_link
    from keyshift.vaults.external import add_external_vault

    rt = sqlite_rt
    key = f"cmk-{secrets.token_hex(4)}"  # moto's KMS lives as long as the test process
    old, new = _moto(), _moto()
    try:
        add_external_vault(
            rt,
            "cust-aws",
            "aws-kms",
            {"endpoint_url": _url(old), "region": "us-east-1"},
            soft_delete_days=30,
            purge_protection=True,
        )
        vaults.create_key(rt, "cust-aws", key, "AES", 256)
        tenants.create_tenant(rt, "contoso")
        pol = create_policy(
            rt, "contoso", "pol", region=rt.settings.default_region, vault="cust-aws", key=key
        )
        health = check_policy(rt, pol["id"])
        assert health.status == "healthy", health
        eid = environments.create_environment(rt, "contoso", "contoso-prod", env_type="production")["id"]
        environments.set_managed(rt, "contoso-prod", True)
        put_rows(rt, eid, 20)
        assert (
            Worker(rt, poll_seconds=0.01).run_job(start_link(rt, pol["id"], "contoso-prod")["id"])
            == "succeeded"
        )
        yield rt, eid, old, new, key
    finally:
        for server in (old, new):
            with contextlib.suppress(Exception):  # one may be stopped by the test already
                server.stop()


def test_unproven_settings_change_nothing_and_proven_ones_reach_every_runtime(
    linked: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt, eid, old, new, key = linked
    before = read_all(rt, eid)
    assert len(before) == 20
    rec = find_vault_record(rt, "cust-aws")
    # Another runtime on the same home (another process, as far as the vault cache goes) that has
    # the vault's adapter open already. It looks at the vault record again every 30 s; at every
    # use here.
    monkeypatch.setattr("keyshift.runtime.VAULT_SETTINGS_RECHECK_SECONDS", 0.0)
    other = Runtime.open(home=rt.home.path, clock=rt.clock, principal="operator:other")
    try:
        assert read_all(other, eid) == before

        # Another region holds none of the keys: refused, nothing changed, the refusal audited.
        with pytest.raises(ConflictError) as refused:
            reconnect_vault(rt, "cust-aws", {"region": "eu-west-1"})
        assert refused.value.code == "settings_unproven"
        assert key in refused.value.message
        after = find_vault_record(rt, "cust-aws")
        assert (after.config, after.version) == (rec.config, rec.version)
        assert [a.outcome for a in _audit(rt, "vault.reconnect")] == ["error"]

        # The same keys at a new address: proven by unwrapping, then switched.
        view = reconnect_vault(rt, "cust-aws", {"endpoint_url": _url(new)})
        assert view["changed"] == ["endpoint_url"]
        assert view["proven"] and all(p.startswith(f"unwrap {key} version ") for p in view["proven"])
        now = find_vault_record(rt, "cust-aws")
        assert now.config == {**rec.config, "endpoint_url": _url(new)} and now.version == rec.version + 1
        ok = [a for a in _audit(rt, "vault.reconnect") if a.outcome == "ok"]
        assert len(ok) == 1 and ok[0].details["changed"] == ["endpoint_url"]

        old.stop()  # the old address is gone
        for runtime in (rt, other):
            flush(runtime)  # no data key in cache: the next read unwraps through the vault
        assert read_all(rt, eid) == before  # this runtime dropped its adapter at once
        assert read_all(other, eid) == before  # the other one at its next look at the record
    finally:
        other.close()


def test_nothing_to_change_and_a_local_vault_are_refused(linked: Any) -> None:
    rt, _eid, old, _new, _key = linked
    rec = find_vault_record(rt, "cust-aws")
    with pytest.raises(UsageError):
        reconnect_vault(rt, "cust-aws", {})
    with pytest.raises(UsageError):
        reconnect_vault(rt, "cust-aws", {"endpoint_url": _url(old)})  # the same settings
    with pytest.raises(UsageError):
        reconnect_vault(rt, "cust-aws", {"region": ""})  # invalid: validated as `vault add` does
    vaults.create_local_vault(rt, "lv")
    with pytest.raises(ConflictError) as local:
        reconnect_vault(rt, "lv", {"endpoint_url": "http://127.0.0.1:1"})
    assert local.value.code == "not_external"
    after = find_vault_record(rt, "cust-aws")
    assert (after.config, after.version) == (rec.config, rec.version)
    assert {a.outcome for a in _audit(rt, "vault.reconnect")} == {"error"}


def test_the_cli_refuses_options_of_another_kind_with_exit_2_and_changes_nothing(
    linked: Any, tmp_path: Path
) -> None:
    rt, _eid, _old, new, _key = linked
    rec = find_vault_record(rt, "cust-aws")
    env = {**os.environ, "KEYSHIFT_HOME": str(rt.home.path)}
    cmd = [sys.executable, "-m", "keyshift", "--json", "vault", "reconnect", "cust-aws"]
    bad = subprocess.run(
        [*cmd, "--host", "kmip.example"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2, bad.stderr
    assert "--host" in bad.stderr and "aws-kms" in bad.stderr
    after = find_vault_record(rt, "cust-aws")
    assert (after.config, after.version) == (rec.config, rec.version)
    good = subprocess.run(
        [*cmd, "--endpoint-url", _url(new)], env=env, capture_output=True, text=True, timeout=60
    )
    assert good.returncode == 0, good.stderr
    out = json.loads(good.stdout)
    assert out["changed"] == ["endpoint_url"] and out["proven"]


def test_a_kmip_client_certificate_is_rotated_and_another_clients_is_refused(
    sqlite_rt: Runtime, tmp_path: Path
) -> None:
    """The case the command exists for: the KMIP client certificate is replaced before it expires.
    A new certificate of the same client (same CN, from the same CA) is proven and taken, and the
    old files can go; another client's certificate (another CN: the PyKMIP server lets an object's
    owner only use it) is refused and nothing changes. Real PyKMIP server over mutual TLS."""
    from integration.ext_servers import ServerUnavailable, issue_client_cert, run_kmip_server
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_link
    from keyshift.vaults.external import add_external_vault

    rt = sqlite_rt
    try:
        cm = run_kmip_server(tmp_path / "kmip")
        server = cm.__enter__()
    except ServerUnavailable as exc:
        pytest.skip(f"PyKMIP server unavailable: {exc}")
    try:
        pki = server.pki
        config = {
            "host": server.host,
            "port": server.port,
            "cert": str(pki.client_cert),
            "key": str(pki.client_key),
            "ca": str(pki.ca),
        }
        add_external_vault(rt, "cust-kmip", "kmip", config, soft_delete_days=30, purge_protection=True)
        vaults.create_key(rt, "cust-kmip", "cmk", "AES", 256)
        tenants.create_tenant(rt, "contoso")
        pol = create_policy(
            rt, "contoso", "pol", region=rt.settings.default_region, vault="cust-kmip", key="cmk"
        )
        assert check_policy(rt, pol["id"]).status == "healthy"
        eid = environments.create_environment(rt, "contoso", "contoso-prod", env_type="production")["id"]
        environments.set_managed(rt, "contoso-prod", True)
        put_rows(rt, eid, 10)
        job = start_link(rt, pol["id"], "contoso-prod")["id"]
        assert Worker(rt, poll_seconds=0.01).run_job(job) == "succeeded"
        before = read_all(rt, eid)
        rec = find_vault_record(rt, "cust-kmip")

        stranger = issue_client_cert(pki, "someone-else", "stranger")
        with pytest.raises(ConflictError) as refused:
            reconnect_vault(rt, "cust-kmip", {"cert": str(stranger[0]), "key": str(stranger[1])})
        assert refused.value.code == "settings_unproven"
        after = find_vault_record(rt, "cust-kmip")
        assert (after.config, after.version) == (rec.config, rec.version)

        rotated = issue_client_cert(pki, "keyshift-client", "client-2027")
        view = reconnect_vault(rt, "cust-kmip", {"cert": str(rotated[0]), "key": str(rotated[1])})
        assert view["changed"] == ["cert", "key"]
        assert view["proven"] and all(p.startswith("unwrap cmk version ") for p in view["proven"])
        pki.client_cert.unlink()  # the old certificate is gone
        pki.client_key.unlink()
        flush(rt)
        fresh = Runtime.open(home=rt.home.path, clock=rt.clock, principal="operator:fresh")
        try:
            assert read_all(rt, eid) == before
            assert read_all(fresh, eid) == before
        finally:
            fresh.close()
    finally:
        cm.__exit__(None, None, None)
