"""Proofs: kill -9 a worker at many points of a BYOK -> CMK migration (mid-batch, mid-file, at
cutover, during re-encryption) and resume — every record, audit event and file is readable and
equal, none lost or duplicated. And a reader/writer load during a migration sees zero failures."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
from pathlib import Path
from typing import Any

from keyshift.control import tenants
from keyshift.jobs import store
from keyshift.jobs.runner import Worker
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys

from .helpers import byok_world, customer_key, env_row, fill, job, make_policy, read_all, run

LEASE = 0.4


def _child(home: str, url: str | None, job_id: str, point: str, n: int) -> None:
    """Runs in a forked process: a fresh runtime and worker; SIGKILLs itself at the n-th `point`."""
    seen = {"n": 0}

    def hook(name: str) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] == n:
                os.kill(os.getpid(), signal.SIGKILL)

    try:
        with Runtime.open(home=home, database_url=url, principal="operator:crash-worker") as crt:
            Worker(crt, lease_seconds=LEASE, poll_seconds=0.02, hooks={"point": hook}).run_job(job_id)
    except BaseException:
        os._exit(3)
    os._exit(0)


def _worker(
    home: Path, url: str | None, job_id: str, point: str, n: int, kill_after: float | None = None
) -> int:
    """A worker in its own OS process (forked: no interpreter start-up per trial); killed with
    SIGKILL at the n-th `point`, or by the parent after `kill_after` seconds (a random moment)."""
    proc = multiprocessing.get_context("fork").Process(target=_child, args=(str(home), url, job_id, point, n))
    proc.start()
    if kill_after is not None:
        proc.join(kill_after)
        if proc.is_alive():
            proc.kill()
    proc.join(120)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return int(proc.exitcode or 0)


def _small_batches(rt: Runtime, job_id: str) -> None:
    with rt.transaction() as s:
        j = store.find_job(s, job_id)
        j.params = {**j.params, "dek_batch": 1, "audit_batch": 4, "file_batch": 1, "row_batch": 7}


def test_kill_9_at_every_kind_of_point_then_resume_loses_and_duplicates_nothing(
    rt: Runtime, tmp_path: Path, db_url: str | None
) -> None:
    home = rt.settings.home_path()
    w = byok_world(rt, tmp_path, envs=("crash-a", "crash-b"))
    from keyshift.stores.envstate import env_states

    expected = {}
    for name, env_id in w["envs"].items():
        data = fill(rt, env_id, rows=30, events=13, files=3)
        # a file spanning several segments, so "mid-file" is really inside one
        from keyshift.stores.files import FileStore

        big = os.urandom(5 << 19)
        FileStore(rt, env_id).put("big/blob.bin", big)
        data["files"]["big/blob.bin"] = big
        # several DEKs per store
        data_keys(rt).roll(rt, env_states(rt).get(env_id), "records", bytes.fromhex(_primary(rt, env_id)))
        from keyshift.stores.records import RecordStore

        RecordStore(rt, env_id).put_many("t", [(f"s{i}", {"s": i}) for i in range(10)])
        data["rows"].update({f"s{i}": {"s": i} for i in range(10)})
        expected[name] = data
    vault, key = customer_key(rt, "crash-kv", "crash-cmk")
    make_policy(rt, w["tenant"], "crash-pol", vault, key)
    tenants.byok_flag_remove(rt, w["tenant"], ticket="SR-9")

    plans = {
        "crash-a": (
            False,
            [
                ("rewrap:wrapped", 1),
                ("rewrap:wrapped", 2),
                ("cutover:flipped", 1),
                ("move:mid-batch", 1),
                ("move:mid-batch", 2),
                ("move:mid-file", 1),
                ("move:mid-file", 2),
                ("random", 0),
                ("move:mid-file", 1),
                ("random", 0),
            ],
        ),
        "crash-b": (
            True,
            [  # random kills last: one landing late could carry the job past a planned point
                ("rewrap:wrapped", 1),
                ("cutover:flipped", 1),
                ("reencrypt:rows", 1),
                ("reencrypt:rows", 2),
                ("move:mid-batch", 1),
                ("move:mid-file", 1),
                ("random", 0),
                ("random", 0),
            ],
        ),
    }
    kills = 0
    landed: set[str] = set()
    rng = random.Random(20261129)
    for name, (reencrypt, crashes) in plans.items():
        view = start_link(rt, "crash-pol", name, reencrypt=reencrypt)
        _small_batches(rt, view["id"])
        for point, n in crashes:
            if point == "random":
                code = _worker(home, db_url, view["id"], "-", 0, kill_after=rng.uniform(0.05, 0.6))
            else:
                code = _worker(home, db_url, view["id"], point, n)
            if code == -9:
                kills += 1
                landed.add(point)
            if job(rt, view["id"])["state"] == "succeeded":
                break
        assert _worker(home, db_url, view["id"], "-", 0) == 0
        assert job(rt, view["id"])["state"] == "succeeded", job(rt, view["id"])
    print(f"kills landed: {kills} at {sorted(landed)}")
    # every kind of point was hit by a deterministic kill; a random kill may come after the job ended
    kinds = {"rewrap:wrapped", "cutover:flipped", "move:mid-batch", "move:mid-file", "reencrypt:rows"}
    assert kinds <= landed, f"no kill landed at {sorted(kinds - landed)}"
    assert kills >= 10, f"only {kills} kills landed"
    data_keys(rt).flush()
    for name, env_id in w["envs"].items():
        env = env_row(rt, name)
        assert (
            env.enc_mode == "cmk"
            and env.stores["audit"] == "document"
            and env.stores["files"] == "file_storage"
        )
        got = read_all(rt, env_id)  # read_all fails on a duplicated audit event
        assert got["rows"] == expected[name]["rows"]
        assert got["events"] == expected[name]["events"]
        assert got["files"] == expected[name]["files"]
        from keyshift.stores.audit import DocumentAudit

        assert DocumentAudit(rt).count(env_id) == len(expected[name]["events"])
    assert tenants.show_tenant(rt, w["tenant"])["final_byok_migration_at"] is not None


def _primary(rt: Runtime, env_id: str) -> str:
    from sqlalchemy import select

    from keyshift.db.models import Dek

    with rt.transaction() as s:
        return str(
            s.scalars(
                select(Dek.id).where(
                    Dek.environment_id == env_id, Dek.store == "records", Dek.state == "active"
                )
            ).first()
        )


def test_reader_and_writer_see_zero_failures_during_a_byok_migration(rt: Runtime, tmp_path: Path) -> None:
    w = byok_world(rt, tmp_path, envs=("live",))
    env_id = w["envs"]["live"]
    base = fill(rt, env_id, rows=60, events=20, files=3)
    vault, key = customer_key(rt, "live-kv", "live-cmk")
    make_policy(rt, w["tenant"], "live-pol", vault, key)
    tenants.byok_flag_remove(rt, w["tenant"], ticket="SR-10")
    view = start_link(rt, "live-pol", "live", reencrypt=True)
    _small_batches(rt, view["id"])

    from keyshift.stores.audit import AuditLog
    from keyshift.stores.files import FileStore
    from keyshift.stores.records import RecordStore

    stop = threading.Event()
    stats: dict[str, Any] = {"writes": 0, "reads": 0, "write_errors": [], "read_errors": []}
    written: dict[str, Any] = {"rows": {}, "events": {}, "files": {}}
    rng = random.Random(7)

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                RecordStore(rt, env_id).put("t", f"w{i % 25}", {"w": i})
                written["rows"][f"w{i % 25}"] = {"w": i}
                eid = AuditLog(rt, env_id).append({"w": i})
                written["events"][eid] = {"w": i}
                if i % 5 == 0:
                    body = f"live {i}".encode() * 20
                    FileStore(rt, env_id).put(f"live/{i % 3}.txt", body)
                    written["files"][f"live/{i % 3}.txt"] = body
                stats["writes"] += 1
            except Exception as exc:  # counted, and the test fails on any
                stats["write_errors"].append(repr(exc))
            i += 1

    def reader() -> None:
        keys = list(base["rows"])
        paths = list(base["files"])
        while not stop.is_set():
            try:
                k = rng.choice(keys)
                assert RecordStore(rt, env_id).get("t", k) == base["rows"][k]
                p = rng.choice(paths)
                assert FileStore(rt, env_id).get(p) == base["files"][p]
                AuditLog(rt, env_id).query(limit=10)
                stats["reads"] += 1
            except Exception as exc:
                stats["read_errors"].append(repr(exc))

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        state = run(rt, view["id"])
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert state == "succeeded", job(rt, view["id"])
    assert stats["write_errors"] == [] and stats["read_errors"] == []
    assert stats["writes"] > 5 and stats["reads"] > 5
    data_keys(rt).flush()
    got = read_all(rt, env_id)
    assert got["rows"] == {**base["rows"], **written["rows"]}
    assert got["events"] == {**base["events"], **written["events"]}
    assert got["files"] == {**base["files"], **written["files"]}
