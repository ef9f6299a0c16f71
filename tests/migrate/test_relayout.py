"""After a BYOK tenant finalizes by migrating its last BYOK environment, its platform-key
environments leave SQL too (a `relayout` job each); a restore within the window that un-finalizes
the tenant cancels relayouts that have not cut over yet, leaving those environments free."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keyshift.control import environments, tenants
from keyshift.jobs import store
from keyshift.migrate.link import start_link
from keyshift.migrate.restore import start_restore
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys

from .helpers import byok_world, customer_key, env_row, fill, job, make_policy, read_all, run


def _world(rt: Runtime, tmp_path: Path) -> dict[str, Any]:
    w = byok_world(rt, tmp_path)
    w["plain"] = environments.create_environment(rt, "fabrikam", "fab-plain", env_type="sandbox")["id"]
    w["data"] = fill(rt, w["plain"], rows=10, events=6, files=3)
    fill(rt, w["envs"]["fab-prod"], rows=5, events=2, files=1)
    vault, key = customer_key(rt, "fab-kv", "fab-cmk")
    make_policy(rt, "fabrikam", "fab-pol", vault, key)
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-1")
    view = start_link(rt, "fab-pol", "fab-prod")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    return w


def _relayouts(rt: Runtime) -> list[Any]:
    with rt.transaction() as s:
        return [store.to_view(j) for j in store.list_jobs(s) if j.kind == "relayout"]


def test_migrating_the_last_byok_env_moves_the_platform_envs_out_of_sql(rt: Runtime, tmp_path: Path) -> None:
    w = _world(rt, tmp_path)
    assert tenants.show_tenant(rt, "fabrikam")["sql_restriction"] is False
    jobs = _relayouts(rt)
    assert [j["environment"] for j in jobs] == [{"id": w["plain"], "name": "fab-plain"}]
    assert run(rt, jobs[0]["id"]) == "succeeded", job(rt, jobs[0]["id"])
    assert env_row(rt, "fab-plain").stores == {"records": "sql", "audit": "document", "files": "file_storage"}
    data_keys(rt).flush()
    assert read_all(rt, w["plain"]) == w["data"]


def test_a_restore_cancels_relayouts_not_yet_cut_over(rt: Runtime, tmp_path: Path) -> None:
    _world(rt, tmp_path)
    (pending,) = _relayouts(rt)
    assert pending["state"] == "pending"
    view = start_restore(rt, "fab-prod")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    assert tenants.show_tenant(rt, "fabrikam")["sql_restriction"] is True
    assert _relayouts(rt)[0]["state"] == "cancelled"
    assert env_row(rt, "fab-plain").stores == {"records": "sql", "audit": "sql", "files": "sql"}
    with rt.transaction() as s:
        assert store.running_job_for(s, env_row(rt, "fab-plain").id) is None  # the environment is free


def test_kill_9_during_a_relayout_then_resume_loses_nothing(
    rt: Runtime, tmp_path: Path, db_url: str | None
) -> None:
    import os
    import random

    from keyshift.stores.files import FileStore

    from .test_crash import _small_batches, _worker

    byok_world(rt, tmp_path, envs=())
    env_id = environments.create_environment(rt, "fabrikam", "fab-plain", env_type="sandbox")["id"]
    expected = fill(rt, env_id, rows=10, events=13, files=3)
    big = os.urandom(5 << 19)  # several segments: "mid-file" is really inside one
    FileStore(rt, env_id).put("big/blob.bin", big)
    expected["files"]["big/blob.bin"] = big
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-2")  # no BYOK environment: finalizes now
    (view,) = _relayouts(rt)
    _small_batches(rt, view["id"])
    home = rt.settings.home_path()
    rng = random.Random(20261202)
    kills = 0
    for point, n in (("move:mid-batch", 1), ("move:mid-file", 1), ("move:mid-batch", 3), ("random", 0)):
        if point == "random":
            code = _worker(home, db_url, view["id"], "-", 0, kill_after=rng.uniform(0.05, 0.4))
        else:
            code = _worker(home, db_url, view["id"], point, n)
        kills += code == -9
        if job(rt, view["id"])["state"] == "succeeded":
            break
    assert kills >= 2
    assert _worker(home, db_url, view["id"], "-", 0) == 0
    assert job(rt, view["id"])["state"] == "succeeded", job(rt, view["id"])
    assert env_row(rt, "fab-plain").stores == {"records": "sql", "audit": "document", "files": "file_storage"}
    data_keys(rt).flush()
    assert read_all(rt, env_id) == expected  # nothing lost; read_all fails on a duplicated event
    from keyshift.stores.audit import DocumentAudit

    assert DocumentAudit(rt).count(env_id) == len(expected["events"])


def test_an_unmovable_path_stops_a_relayout_before_its_cutover(rt: Runtime, tmp_path: Path) -> None:
    from keyshift.stores.file_backends import SqlFiles

    from .test_move_paths import _stored_unchecked

    w = _world(rt, tmp_path)
    (pending,) = _relayouts(rt)
    _stored_unchecked(rt, w["plain"], "bad//double-slash", b"old")
    before = env_row(rt, "fab-plain").stores
    assert run(rt, pending["id"]) == "failed"
    failed = job(rt, pending["id"])
    assert failed["error"]["code"] == "unmovable_file_paths", failed
    assert env_row(rt, "fab-plain").stores == before  # nothing cut over
    assert store.request_cancel(rt, pending["id"])["state"] == "cancelled"
    # the way forward: remove the file; the environment's data is all there, still in SQL
    SqlFiles(rt).delete(w["plain"], "bad//double-slash")
    data_keys(rt).flush()
    assert read_all(rt, w["plain"]) == w["data"]
