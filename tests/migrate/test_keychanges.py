"""Rotation, swap, failure mid-job with resume, cancel before cutover."""

from __future__ import annotations

from typing import Any

import pytest

from keyshift.control import vaults
from keyshift.errors import ConflictError
from keyshift.jobs import schedule, store
from keyshift.migrate import maintenance
from keyshift.migrate.link import start_link, start_swap
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore

from .helpers import customer_key, env_row, job, make_env, make_policy, make_tenant, records, run, wraps


@pytest.fixture
def linked(sqlite_rt: Runtime) -> dict[str, Any]:
    rt = sqlite_rt
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "prod")
    vault, key = customer_key(rt)
    pid = make_policy(rt, "contoso", "pol1", vault, key)
    store_ = RecordStore(rt, env_id)
    store_.put_many("t", [(f"r{i}", {"n": i}) for i in range(50)])
    return {"rt": rt, "env": env_id, "policy": pid, "vault": vault, "key": key}


def _link(w: dict[str, Any], **kw: Any) -> str:
    rt = w["rt"]
    view = start_link(rt, "pol1", "prod", **kw)
    assert run(rt, view["id"]) == "succeeded"
    return str(view["id"])


def test_rotation_is_detected_and_deks_move_to_the_new_version(linked: dict[str, Any]) -> None:
    rt = linked["rt"]
    _link(linked)
    v1 = env_row(rt, "prod").kek_key_version
    assert schedule.run_due(rt, only=("rotation",))["rotation"]["rotate_jobs"] == []
    vaults.rotate_key(rt, linked["vault"], linked["key"])
    out = schedule.run_due(rt, only=("rotation",))["rotation"]
    assert len(out["rotate_jobs"]) == 1
    before = records(rt, linked["env"])
    assert run(rt, out["rotate_jobs"][0]) == "succeeded"
    env = env_row(rt, "prod")
    assert env.kek_key_version not in (None, v1) and env.enc_mode == "cmk"
    data_keys(rt).flush()
    assert records(rt, linked["env"]) == before
    # nothing left to rotate
    assert schedule.run_due(rt, only=("rotation",))["rotation"]["rotate_jobs"] == []


def test_policy_health_picks_up_a_rotation_of_the_policy_key(linked: dict[str, Any]) -> None:
    rt = linked["rt"]
    _link(linked)
    v1 = env_row(rt, "prod").kek_key_version
    assert maintenance.policy_health(rt, "pol1")["rotate_jobs"] == []
    vaults.rotate_key(rt, linked["vault"], linked["key"])
    view = maintenance.policy_health(rt, "pol1")
    assert view["health"] == "healthy" and len(view["rotate_jobs"]) == 1
    before = records(rt, linked["env"])
    assert run(rt, view["rotate_jobs"][0]) == "succeeded"
    assert env_row(rt, "prod").kek_key_version not in (None, v1)
    data_keys(rt).flush()
    assert records(rt, linked["env"]) == before
    assert maintenance.policy_health(rt, "pol1")["rotate_jobs"] == []


def test_swap_moves_the_env_to_the_other_policy_key(linked: dict[str, Any]) -> None:
    rt = linked["rt"]
    _link(linked)
    vault2, key2 = customer_key(rt, "other-kv", "cmk2")
    p2 = make_policy(rt, "contoso", "pol2", vault2, key2)
    before = records(rt, linked["env"])
    view = start_swap(rt, "pol2", "prod")
    assert run(rt, view["id"]) == "succeeded"
    env = env_row(rt, "prod")
    assert (env.policy_id, env.kek_key_name, env.enc_mode) == (p2, "cmk2", "cmk")
    assert {w[3] for w in wraps(rt, linked["env"]) if w[1] == "current"} == {"cmk2"}
    data_keys(rt).flush()
    assert records(rt, linked["env"]) == before
    with pytest.raises(ConflictError):
        start_swap(rt, "pol2", "prod")


def test_key_revoked_mid_job_fails_with_reason_data_stays_readable_and_resume_finishes(
    linked: dict[str, Any],
) -> None:
    rt = linked["rt"]
    env_id = linked["env"]
    # several DEKs so the rewrap has several batches
    from keyshift.stores.envstate import env_states

    for i in range(3):
        last = bytes.fromhex(wraps(rt, env_id)[-1][0])
        data_keys(rt).roll(rt, env_states(rt).get(env_id), "records", last)
        RecordStore(rt, env_id).put("t", f"extra{i}", {"i": i})
    before = records(rt, env_id)
    from keyshift.db.models import Policy

    with rt.transaction() as s:
        identity = s.get(Policy, linked["policy"]).identity  # type: ignore[union-attr]
    view = start_link(rt, "pol1", "prod", reencrypt=False)
    with rt.transaction() as s:
        j = store.find_job(s, view["id"])
        j.params = {**j.params, "dek_batch": 1}
    calls = {"n": 0}

    def point(name: str) -> None:
        if name == "rewrap:wrapped":
            calls["n"] += 1
            if calls["n"] == 2:
                vaults.revoke_key_grant(rt, linked["vault"], linked["key"], identity, force=True)

    from keyshift.jobs.runner import Worker

    assert Worker(rt, hooks={"point": point}).run_job(view["id"]) == "failed"
    v = job(rt, view["id"])
    assert v["error"]["code"] == "access_denied", v["error"]
    assert 0 < v["done"] < v["total"]
    env = env_row(rt, "prod")
    assert env.enc_mode == "platform" and env.policy_id is None  # previous key still in force
    data_keys(rt).flush()
    assert records(rt, env_id) == before
    RecordStore(rt, env_id).put("t", "during-failure", {"ok": 1})
    vaults.grant_key(rt, linked["vault"], linked["key"], identity, "get,wrapKey,unwrapKey")
    assert store.resume(rt, view["id"])["state"] == "running"
    assert run(rt, view["id"]) == "succeeded"
    assert env_row(rt, "prod").enc_mode == "cmk"
    data_keys(rt).flush()
    assert records(rt, env_id) == {**before, "during-failure": {"ok": 1}}


def test_cancel_before_cutover_drops_pending_wraps_and_changes_nothing(linked: dict[str, Any]) -> None:
    rt = linked["rt"]
    view = start_link(rt, "pol1", "prod")
    from keyshift.jobs.runner import Worker

    w = Worker(rt)
    for _ in range(50):
        if [x for x in wraps(rt, linked["env"]) if x[1] == "pending"]:
            break
        w.step(view["id"])
    assert job(rt, view["id"])["phase"] == "rewrap"
    assert store.request_cancel(rt, view["id"])["state"] == "running"
    assert w.run_job(view["id"]) == "cancelled"
    assert not [x for x in wraps(rt, linked["env"]) if x[1] == "pending"]
    env = env_row(rt, "prod")
    assert env.enc_mode == "platform" and env.policy_id is None
    # the environment is free again
    view2 = start_link(rt, "pol1", "prod")
    assert run(rt, view2["id"]) == "succeeded"


def test_unlink_warns_when_the_old_key_will_not_stay_usable_for_30_days(linked: dict[str, Any]) -> None:
    from datetime import timedelta

    from keyshift.control.common import get_vault_record
    from keyshift.migrate.link import old_key_warnings

    rt = linked["rt"]
    vaults.create_key(rt, linked["vault"], "short", "RSA", 2048, expires=rt.clock.now() + timedelta(days=20))
    with rt.transaction() as s:
        vault_id = get_vault_record(s, linked["vault"]).id
    warnings = old_key_warnings(rt, vault_id, "short")
    assert warnings and "within 30 days" in warnings[0]
    assert old_key_warnings(rt, vault_id, linked["key"]) == []
