"""An AES-256 customer key on an HSM (SoftHSM2: a non-extractable token key, DEKs wrapped with
CKM_AES_KEY_WRAP_PAD) is a valid CMK: it links, rotates (rewrap under the new version), revokes
(key disabled -> environment disabled with the vault's answer as evidence) and re-enables."""

# ruff: noqa: F811 - pytest fixtures imported from servers are parameters here
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from integration.cmk_world import cmk_world
from keyshift.control import environments, vaults
from keyshift.control.monitor import monitor_once
from keyshift.control.revocation import reenable_environment
from keyshift.db.models import Dek, DekWrap, Environment
from keyshift.jobs.runner import Worker
from keyshift.migrate import maintenance
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore
from keyshift.vaults.base import KeyRef
from servers import softhsm_token  # noqa: F401 - fixture


def _current_wraps(rt: Runtime, env_id: str) -> list[tuple[str, str, str]]:
    with rt.transaction() as s:
        return [
            (w.key_version, w.algorithm, w.key_name)
            for w in s.scalars(
                select(DekWrap)
                .join(Dek, Dek.id == DekWrap.dek_id)
                .where(Dek.environment_id == env_id, DekWrap.state == "current")
            )
        ]


def _rows(rt: Runtime, env_id: str) -> dict[str, Any]:
    return {r.id: r.value for r in RecordStore(rt, env_id).iter_all("t")}


def test_aes256_cmk_on_softhsm_links_rotates_revokes_and_reenables(rt: Runtime, softhsm_token: Any) -> None:
    w = cmk_world(rt, "pkcs11", softhsm_token, key_type="AES", size=256, rows=15)
    before = _rows(rt, w.env)
    assert len(before) == 15
    info = rt.vault("cust").describe(KeyRef("cust", w.key))
    assert (info.key_type, info.size, info.current_version) == ("AES", 256, "1")
    # Linked: every current wrap is the HSM's AES key wrap (RFC 5649) under version 1.
    wraps = _current_wraps(rt, w.env)
    assert wraps and all(x == ("1", "AES-KWP", w.key) for x in wraps), wraps
    view = environments.show_environment(rt, "contoso-prod")
    assert view["encryption"]["mode"] == "cmk" and view["encryption"]["key"]["vault"]["name"] == "cust"

    # Rotates: a new key object on the token becomes current; `policy health` starts the rewrap.
    vaults.rotate_key(rt, "cust", w.key)
    out = maintenance.policy_health(rt, w.policy)
    assert out["health"] == "healthy" and out["rotate_jobs"], out
    for job_id in out["rotate_jobs"]:
        assert Worker(rt, poll_seconds=0.01).run_job(job_id) == "succeeded"
    wraps = _current_wraps(rt, w.env)
    assert wraps and all(x == ("2", "AES-KWP", w.key) for x in wraps), wraps
    data_keys(rt).flush(w.env)
    assert _rows(rt, w.env) == before

    # Revokes: the customer disables the key on the token; the monitor confirms on a fresh
    # session and disables the environment, with the vault's answer as evidence.
    vaults.set_key_enabled(rt, "cust", w.key, False, force=True)
    res = monitor_once(rt)[w.policy]
    assert res["health"] == "unhealthy" and res["environments_disabled"] == [w.env], res
    assert res["key_usable"] is False and res["evidence"]["vault"]["name"] == "cust"
    assert "fresh connection" in res["evidence"]["check"] and "key_disabled" in res["evidence"]["answer"]
    view = environments.show_environment(rt, "contoso-prod")
    assert view["state"] == "disabled" and view["delete_after"] is not None
    ev = view["state_evidence"]
    assert ev["source"] == "monitor" and ev["vault"]["name"] == "cust" and "key_disabled" in ev["answer"], ev

    # Re-enables: key back on, the admin re-enables after a real round trip; every row reads back.
    vaults.set_key_enabled(rt, "cust", w.key, True)
    assert reenable_environment(rt, "contoso-prod")["state"] == "enabled"
    with rt.transaction() as s:
        env = s.get(Environment, w.env)
        assert env is not None and env.delete_after is None
    data_keys(rt).flush(w.env)
    assert _rows(rt, w.env) == before
