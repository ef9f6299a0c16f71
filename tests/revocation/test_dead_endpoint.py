"""A real external vault that goes away: the customer key lives in KMS (moto's real HTTP server,
started and stopped by this test), the endpoint dies. Within the grace period the environment stays
enabled (requests needing the vault fail with vault_unavailable, exit 6); past it the monitor
disables it (exit 7). The endpoint comes back, `re-enable` proves the key, every record reads back."""

from __future__ import annotations

import contextlib

import pytest

from keyshift.control import environments, tenants, vaults
from keyshift.control.health import check_policy
from keyshift.control.monitor import monitor_once
from keyshift.control.policies import create_policy
from keyshift.control.revocation import reenable_environment
from keyshift.errors import EnvironmentUnavailableError, VaultUnavailableError
from keyshift.stores.keys import data_keys
from servers import aws_test_env  # noqa: F401 - fixture

from .helpers import env_row, put_rows, read_all, records_store


def test_vault_endpoint_dies_then_returns(sqlite_rt, clock, aws_test_env):  # type: ignore[no-untyped-def]  # noqa: F811
    from moto.server import ThreadedMotoServer

    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_link
    from keyshift.vaults.external import add_external_vault

    rt = sqlite_rt
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        add_external_vault(
            rt,
            "cust-aws",
            "aws-kms",
            {"endpoint_url": f"http://{host}:{port}", "region": "us-east-1"},
            soft_delete_days=30,
            purge_protection=True,
        )
        vaults.create_key(rt, "cust-aws", "cmk", "AES", 256)
        tenants.create_tenant(rt, "contoso")
        pol = create_policy(
            rt, "contoso", "pol", region=rt.settings.default_region, vault="cust-aws", key="cmk"
        )
        assert check_policy(rt, pol["id"]).status == "healthy"
        eid = environments.create_environment(rt, "contoso", "contoso-prod", env_type="production")["id"]
        environments.set_managed(rt, "contoso-prod", True)
        put_rows(rt, eid, 25)
        assert (
            Worker(rt, poll_seconds=0.01).run_job(start_link(rt, pol["id"], "contoso-prod")["id"])
            == "succeeded"
        )
        before = read_all(rt, eid)
        assert len(before) == 25

        server.stop()  # the vault's endpoint is dead
        data_keys(rt).flush(eid)  # the cached DEK aged out
        with pytest.raises(VaultUnavailableError) as err:
            records_store(rt, eid).get("t", "r00001")
        assert err.value.exit_code == 6
        out = monitor_once(rt)[pol["id"]]
        assert out["health"] == "warning" and out["environments_disabled"] == []
        assert env_row(rt, eid).state == "enabled"  # transient, within the grace period
        clock.advance(seconds=rt.settings.vault_grace_seconds + 1)
        out = monitor_once(rt)[pol["id"]]
        assert out["health"] == "unhealthy" and out["environments_disabled"] == [eid], out
        with pytest.raises(EnvironmentUnavailableError):
            records_store(rt, eid).get("t", "r00001")

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()  # same endpoint back (moto keeps its keys in this process)
        assert reenable_environment(rt, eid)["state"] == "enabled"
        assert read_all(rt, eid) == before
    finally:
        with contextlib.suppress(Exception):  # already stopped if an assertion failed mid-outage
            server.stop()
