"""--reencrypt rewrites rows in chunks (job param `rewrite_chunk`): key-range read transactions,
crypto outside, one compare-and-swap write transaction per chunk. Proofs: every row kept
and under a fresh DEK; a client's write or delete inside a chunk wins; kill -9 between two chunks of
one batch, then resume, loses and duplicates nothing; a bad knob fails before any DEK is retired."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keyshift.db.models import DataRecord, Dek
from keyshift.jobs import store as job_store
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys
from keyshift.stores.records import RecordStore

from .helpers import customer_key, job, make_env, make_policy, make_tenant, records, run
from .test_crash import _worker

ROWS = 25


@pytest.fixture
def world(rt: Runtime) -> dict[str, str]:
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "prod")
    vault, key = customer_key(rt)
    pid = make_policy(rt, "contoso", "pol1", vault, key)
    RecordStore(rt, env_id).put_many("t", [(f"r{i:02d}", {"n": i}) for i in range(ROWS)])
    return {"env": env_id, "policy": pid}


def _start(rt: Runtime, row_batch: int = 10, chunk: Any = 3) -> str:
    view = start_link(rt, "pol1", "prod", reencrypt=True)
    with rt.transaction() as s:
        j = job_store.find_job(s, view["id"])
        j.params = {**j.params, "row_batch": row_batch, "rewrite_chunk": chunk}
    return str(view["id"])


def _deks_in_use(rt: Runtime, env_id: str) -> set[str]:
    with rt.transaction() as s:
        return set(s.scalars(select(DataRecord.dek_id).where(DataRecord.environment_id == env_id)))


def _record_deks(rt: Runtime, env_id: str) -> dict[str, str]:
    with rt.transaction() as s:
        return {
            d.id: d.state
            for d in s.scalars(select(Dek).where(Dek.environment_id == env_id, Dek.store == "records"))
        }


def test_chunks_rewrite_every_row_under_a_fresh_dek(rt: Runtime, world: dict[str, str]) -> None:
    before = records(rt, world["env"])
    old = _deks_in_use(rt, world["env"])
    job_id = _start(rt)
    points: list[str] = []
    assert run(rt, job_id, hooks={"point": points.append}) == "succeeded"
    # ranges of 10, 10, 5 rows in chunks of 3: 4 + 4 + 2 write transactions
    assert points.count("reencrypt:chunk") == 10 and points.count("reencrypt:rows") == 3
    data_keys(rt).flush()
    assert records(rt, world["env"]) == before
    used = _deks_in_use(rt, world["env"])
    assert used and not (used & old)
    assert job(rt, job_id)["error"] is None


def test_a_client_write_or_delete_inside_a_chunk_wins(
    rt: Runtime, world: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = records(rt, world["env"])
    old = _deks_in_use(rt, world["env"])
    from keyshift.stores import record_batches

    real_read = record_batches.read_range
    raced = {"done": False}

    def read_then_client_races(*args: Any, **kw: Any) -> Any:
        got = real_read(*args, **kw)
        if not raced["done"] and any(r.record_id == "r01" for r in got):
            raced["done"] = True  # between the migration's read and its write of this chunk
            client = RecordStore(rt, world["env"])
            client.put("t", "r01", {"client": 1})
            client.delete("t", "r02")
        return got

    monkeypatch.setattr(record_batches, "read_range", read_then_client_races)
    assert run(rt, _start(rt)) == "succeeded"
    assert raced["done"]
    data_keys(rt).flush()
    expected = {**before, "r01": {"client": 1}}
    del expected["r02"]
    assert records(rt, world["env"]) == expected  # nothing overwritten, nothing dropped or recreated
    assert not (_deks_in_use(rt, world["env"]) & old)


def test_kill_9_between_chunks_of_one_batch_then_resume(
    rt: Runtime, tmp_path: Path, db_url: str | None, world: dict[str, str]
) -> None:
    home = rt.settings.home_path()
    before = records(rt, world["env"])
    old = _deks_in_use(rt, world["env"])
    job_id = _start(rt, row_batch=ROWS, chunk=4)  # one batch of 7 chunks
    assert _worker(home, db_url, job_id, "reencrypt:chunk", 2) == -9
    # two chunks committed, the batch itself is not finished
    assert len(_deks_in_use(rt, world["env"]) & old) == 1
    with rt.transaction() as s:
        mixed = s.execute(
            select(DataRecord.record_id).where(
                DataRecord.environment_id == world["env"], DataRecord.dek_id.in_(old)
            )
        ).all()
    assert len(mixed) == ROWS - 8
    assert job(rt, job_id)["state"] != "succeeded"
    assert _worker(home, db_url, job_id, "reencrypt:chunk", 3) == -9
    assert _worker(home, db_url, job_id, "-", 0) == 0
    assert job(rt, job_id)["state"] == "succeeded", job(rt, job_id)
    data_keys(rt).flush()
    assert records(rt, world["env"]) == before
    assert not (_deks_in_use(rt, world["env"]) & old)


@pytest.mark.parametrize("chunk", [0, -1, "64", True, 10_001])
def test_a_bad_chunk_size_fails_the_reencrypt_plan_before_any_dek_is_retired(
    rt: Runtime, world: dict[str, str], chunk: Any
) -> None:
    deks = _record_deks(rt, world["env"])
    before = records(rt, world["env"])
    job_id = _start(rt, chunk=chunk)
    assert run(rt, job_id) != "succeeded"
    view = job(rt, job_id)
    assert "rewrite_chunk" in str(view["error"])
    assert _record_deks(rt, world["env"]) == deks  # still active: nothing retired
    data_keys(rt).flush()
    assert records(rt, world["env"]) == before
