"""A key-change job holds its data keys for its run (`stores.job_keys`): a job longer than the DEK
cache's bound does not unwrap again while the health monitor vouches for the key, does unwrap again
when nothing vouches (revocation still bites in the bound), and loses its keys when the environment
is disabled or the job ends."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select, update

from keyshift.clock import FixedClock
from keyshift.control import vaults
from keyshift.control.health import check_policy
from keyshift.db.models import Environment, Policy
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime
from keyshift.stores import job_keys
from keyshift.stores.envstate import env_states
from keyshift.stores.keys import data_keys

from .helpers import job, records
from .test_scale import _env_deks, _reencrypting_job, _world


def _bound(rt: Runtime) -> float:
    return min(rt.settings.dek_cache_max_age_seconds, rt.settings.revocation_bound_seconds)


def _policy_id(rt: Runtime) -> str:
    with rt.transaction() as s:
        return str(s.scalar(select(Policy.id).where(Policy.name == "pol1")))


def _run_with_time_passing(
    rt: Runtime, clock: FixedClock, calls: Counter[str], job_id: str, *, vouch: bool
) -> tuple[int, int]:
    """Run the job; after every re-encryption batch the clock passes the cache bound (and, with
    `vouch`, the monitor checks the policy — its own vault calls are not the job's). Returns the
    job's vault calls and how many batches passed the bound."""
    monitor_calls = Counter[str]()
    passed = {"n": 0}
    policy = _policy_id(rt)

    def point(name: str) -> None:
        if name != "reencrypt:rows":
            return
        clock.advance(seconds=_bound(rt) + 1)
        passed["n"] += 1
        if vouch:
            before = Counter(calls)
            check_policy(rt, policy)
            monitor_calls.update(Counter(calls) - before)

    state = Worker(rt, poll_seconds=0.01, hooks={"point": point}).run_job(job_id)
    assert state == "succeeded", job(rt, job_id)
    return sum(calls.values()) - sum(monitor_calls.values()), passed["n"]


def test_a_job_longer_than_the_cache_bound_keeps_its_keys_while_the_monitor_vouches(
    rt: Runtime, clock: FixedClock, vault_calls: Counter[str]
) -> None:
    env_id = _world(rt, 400)
    before = records(rt, env_id)
    data_keys(rt).flush()
    vault_calls.clear()
    job_id = _reencrypting_job(rt, row_batch=20)
    total, passed = _run_with_time_passing(rt, clock, vault_calls, job_id, vouch=True)
    assert passed >= 20
    data = _env_deks(rt, env_id)
    assert total <= 4 + 2 * data, (dict(vault_calls), data)
    data_keys(rt).flush()
    assert records(rt, env_id) == before


def test_without_a_recent_healthy_check_a_job_looks_its_keys_up_again_at_the_bound(
    rt: Runtime, clock: FixedClock, vault_calls: Counter[str]
) -> None:
    """Path (b) of revocation: where no monitor vouches, a pinned key is no longer used past the
    bound without asking the vault again."""
    env_id = _world(rt, 400)
    before = records(rt, env_id)
    data_keys(rt).flush()
    vault_calls.clear()
    job_id = _reencrypting_job(rt, row_batch=20)
    total, passed = _run_with_time_passing(rt, clock, vault_calls, job_id, vouch=False)
    # every batch after a pass of the bound unwraps at least the DEK it decrypts again
    assert vault_calls["unwrap"] >= passed - 1 >= 19, dict(vault_calls)
    assert total > 4 + 2 * _env_deks(rt, env_id)
    data_keys(rt).flush()
    assert records(rt, env_id) == before


def test_a_revoked_key_stops_the_job_and_drops_its_pinned_keys(rt: Runtime) -> None:
    env_id = _world(rt, 200)
    data_keys(rt).flush()
    job_id = _reencrypting_job(rt, row_batch=20)
    policy = _policy_id(rt)
    with rt.transaction() as s:
        identity = s.get(Policy, policy).identity  # type: ignore[union-attr]
    seen: dict[str, Any] = {}

    def point(name: str) -> None:
        if name == "reencrypt:rows" and "pinned" not in seen:
            pins = job_keys.job_keys(rt, job_id, env_id)
            seen["pinned"] = len(pins._entries)
            seen["pins"] = pins
            vaults.revoke_key_grant(rt, "contoso-kv", "cmk", identity, force=True)
            from keyshift.control.monitor import check_one

            seen["check"] = check_one(rt, policy)  # the monitor confirms and disables

    state = Worker(rt, poll_seconds=0.01, hooks={"point": point}).run_job(job_id)
    assert state == "failed"
    assert job(rt, job_id)["error"]["code"] == "environment_disabled"
    assert seen["pinned"] >= 2  # an old DEK and the fresh one were held
    assert seen["check"]["environments_disabled"] == [env_id]
    assert seen["pins"]._entries == {}  # the disabled environment's flush emptied them
    assert job_id not in job_keys._pins(rt).jobs


def test_a_flush_of_the_environment_empties_a_jobs_keys_and_the_end_of_the_job_releases_them(
    rt: Runtime,
) -> None:
    env_id = _world(rt, 40)
    env = env_states(rt).get(env_id)
    pins = job_keys.job_keys(rt, "job-a", env_id)
    other = job_keys.job_keys(rt, "job-b", "another-env")
    primary = pins.cipher(rt, env, "records").keyring.primary
    assert pins._entries and pins.key(rt, env, "records", primary.id) is primary
    data_keys(rt).flush(env_id)
    assert pins._entries == {} and "job-a" not in job_keys._pins(rt).jobs
    assert "job-b" in job_keys._pins(rt).jobs  # another environment's job keeps its pins
    job_keys.release(rt, "job-b")
    assert "job-b" not in job_keys._pins(rt).jobs and other._entries == {}
    # a worker that sees a job end drops its pins
    job_id = _reencrypting_job(rt, row_batch=20)
    assert Worker(rt, poll_seconds=0.01).run_job(job_id) == "succeeded"
    assert job_id not in job_keys._pins(rt).jobs


def test_vouching_needs_a_recent_healthy_check_of_the_key_the_dek_is_wrapped_under(
    rt: Runtime, clock: FixedClock
) -> None:
    env_id = _world(rt, 20)
    job_id = _reencrypting_job(rt, row_batch=20)
    assert Worker(rt, poll_seconds=0.01).run_job(job_id) == "succeeded"
    env = env_states(rt).get(env_id)
    dek = data_keys(rt).primary_hex(rt, env, "records")
    policy = _policy_id(rt)
    check_policy(rt, policy)
    assert job_keys.vouched(rt, env_id, dek)
    clock.advance(seconds=rt.settings.revocation_bound_seconds + 1)
    assert not job_keys.vouched(rt, env_id, dek)  # the check is too old
    check_policy(rt, policy)
    assert job_keys.vouched(rt, env_id, dek)
    for column, value in (("health", "warning"), ("health", "unhealthy"), ("key_name", "other")):
        with rt.transaction() as s:
            saved = getattr(s.get(Policy, policy), column)
            s.execute(update(Policy).where(Policy.id == policy).values({column: value}))
        assert not job_keys.vouched(rt, env_id, dek), column
        with rt.transaction() as s:
            s.execute(update(Policy).where(Policy.id == policy).values({column: saved}))
    assert job_keys.vouched(rt, env_id, dek)
    with rt.transaction() as s:
        s.execute(update(Environment).where(Environment.id == env_id).values(state="disabled"))
    assert not job_keys.vouched(rt, env_id, dek)
    assert not job_keys.vouched(rt, env_id, "00" * 16)  # no such DEK
