"""policy add-env on a platform environment: rewrap (default) and --reencrypt."""

from __future__ import annotations

import pytest

from keyshift.errors import ConflictError
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore

from .helpers import customer_key, env_row, job, make_env, make_policy, make_tenant, records, run, wraps


@pytest.fixture
def world(rt: Runtime) -> dict[str, str]:
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "prod")
    vault, key = customer_key(rt)
    pid = make_policy(rt, "contoso", "pol1", vault, key)
    return {"env": env_id, "policy": pid, "vault": vault, "key": key}


def test_link_rewraps_every_dek_and_flips_the_binding(rt: Runtime, world: dict[str, str]) -> None:
    store = RecordStore(rt, world["env"])
    store.put_many("t", [(f"r{i}", {"n": i}) for i in range(300)])
    before = records(rt, world["env"])
    view = start_link(rt, "pol1", "prod")
    assert view["state"] == "pending" and view["kind"] == "link"
    keys = data_keys(rt)
    calls0 = dict(keys.vault_calls)
    assert run(rt, view["id"]) == "succeeded"
    env = env_row(rt, "prod")
    assert (env.enc_mode, env.enc_managed_by, env.policy_id) == (
        "cmk",
        "customer_via_platform",
        world["policy"],
    )
    assert env.kek_key_name == world["key"] and env.linked_at is not None
    assert env.migrated_from_byok_at is None
    current = [w for w in wraps(rt, world["env"]) if w[1] == "current"]
    assert current and all(w[3] == world["key"] for w in current)
    assert not [w for w in wraps(rt, world["env"]) if w[1] in ("pending", "retained")]
    # O(DEKs): one unwrap + one wrap per DEK, whatever the row count
    deks = len(current)
    assert keys.vault_calls["wrap"] - calls0["wrap"] == deks
    keys.flush()
    assert records(rt, world["env"]) == before
    RecordStore(rt, world["env"]).put("t", "after", {"ok": True})
    assert records(rt, world["env"])["after"] == {"ok": True}
    assert job(rt, view["id"])["done"] == job(rt, view["id"])["total"] == deks


def test_reencrypt_gives_fresh_deks_and_keeps_every_row(rt: Runtime, world: dict[str, str]) -> None:
    store = RecordStore(rt, world["env"])
    store.put_many("t", [(f"r{i}", {"n": i}) for i in range(120)])
    store.put_many("u", [(f"x{i}", [i]) for i in range(30)])
    before_t, before_u = records(rt, world["env"]), records(rt, world["env"], "u")
    old_deks = {w[0] for w in wraps(rt, world["env"])}
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    assert run(rt, view["id"]) == "succeeded"
    data_keys(rt).flush()
    assert records(rt, world["env"]) == before_t and records(rt, world["env"], "u") == before_u
    from sqlalchemy import select

    from keyshift.db.models import DataRecord

    with rt.transaction() as s:
        used = set(s.scalars(select(DataRecord.dek_id).where(DataRecord.environment_id == world["env"])))
    assert used and not (used & old_deks)
    assert job(rt, view["id"])["error"] is None


def test_link_refused_when_env_not_managed_leaves_nothing(rt: Runtime, world: dict[str, str]) -> None:
    make_env(rt, "contoso", "dev", managed=False)
    before = env_row(rt, "dev")
    with pytest.raises(ConflictError) as exc:
        start_link(rt, "pol1", "dev")
    assert exc.value.exit_code == 4
    after = env_row(rt, "dev")
    assert (after.enc_mode, after.policy_id, after.version) == (
        before.enc_mode,
        before.policy_id,
        before.version,
    )
    from keyshift.jobs.store import list_jobs

    with rt.transaction() as s:
        assert list_jobs(s) == []


def test_second_job_on_the_same_env_is_refused(rt: Runtime, world: dict[str, str]) -> None:
    start_link(rt, "pol1", "prod")
    with pytest.raises(ConflictError) as exc:
        start_link(rt, "pol1", "prod")
    assert exc.value.code in ("job_running", "already_linked")
