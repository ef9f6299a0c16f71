"""`env restore --before-migration` is a key change like any other: online, with clients writing
records, audit events and files throughout — no lost or stale acknowledged write, no read error,
a file deleted after the migration stays deleted; and a worker killed (-9) during the restore
resumes to the same result. SQLite and PostgreSQL."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from keyshift.control import tenants
from keyshift.migrate.link import start_link
from keyshift.migrate.restore import start_restore
from keyshift.runtime import Runtime
from keyshift.stores.keys import data_keys

from .helpers import byok_world, customer_key, env_row, fill, job, make_policy, run
from .live_load import DELETABLE, LiveLoad
from .test_crash import LEASE, _small_batches


def _child(home: str, url: str | None, job_id: str, point: str, n: int) -> None:
    """A worker in its own process; SIGKILLs itself at the n-th `point`. Prints what stopped it."""
    import os
    import signal
    import traceback

    from keyshift.jobs.runner import Worker

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
        traceback.print_exc()
        os._exit(3)
    os._exit(0)


def _worker(
    home: Path, url: str | None, job_id: str, point: str, n: int, kill_after: float | None = None
) -> int:
    import multiprocessing

    # spawned, not forked: the live load's threads run in this process, and a fork could copy one of
    # their locks held (the child would then hang on it)
    proc = multiprocessing.get_context("spawn").Process(
        target=_child, args=(str(home), url, job_id, point, n)
    )
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


def _migrated(rt: Runtime, tmp_path: Path, name: str) -> tuple[dict[str, Any], LiveLoad]:
    w = byok_world(rt, tmp_path, envs=(name,))
    env_id = w["envs"][name]
    fill(rt, env_id, rows=20, events=10, files=2)
    load = LiveLoad(rt, env_id, seed=len(name))
    load.seed_files()
    vault, key = customer_key(rt, f"{name}-kv", f"{name}-cmk")
    make_policy(rt, w["tenant"], f"{name}-pol", vault, key)
    tenants.byok_flag_remove(rt, w["tenant"], ticket="SR-77")
    view = start_link(rt, f"{name}-pol", name)
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    load.bump_all()  # newer than the retained pre-migration copy, and one file deleted
    return w, load


def _check_restored(rt: Runtime, name: str, load: LiveLoad) -> None:
    env = env_row(rt, name)
    assert env.enc_mode == "byok" and env.stores == {"records": "sql", "audit": "sql", "files": "sql"}
    data_keys(rt).flush()
    bad = load.verify()
    assert not bad, f"{len(bad)} problems ({load.summary()}): {bad[:8]}"
    assert load.counts["file_writes"] > 0 and load.counts["reads"] > 0, load.summary()


def test_restore_under_live_load_keeps_every_acknowledged_write(rt: Runtime, tmp_path: Path) -> None:
    _w, load = _migrated(rt, tmp_path, "rst-live")
    view = start_restore(rt, "rst-live")
    _small_batches(rt, view["id"])
    load.start()
    try:
        assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    finally:
        load.stop()
    _check_restored(rt, "rst-live", load)


def test_file_deleted_after_migration_stays_deleted_after_restore(rt: Runtime, tmp_path: Path) -> None:
    _w, load = _migrated(rt, tmp_path, "rst-del")
    view = start_restore(rt, "rst-del")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    from keyshift.errors import NotFoundError
    from keyshift.stores.files import FileStore

    fs = FileStore(rt, env_row(rt, "rst-del").id)
    assert DELETABLE[0] not in {i["path"] for i in fs.list("")}
    try:
        fs.get(DELETABLE[0])
        raise AssertionError("a file deleted after the migration came back with the restore")
    except NotFoundError:
        pass
    bad = load.verify()
    assert not bad, bad


def test_kill_9_during_restore_under_load_then_resume(
    rt: Runtime, tmp_path: Path, db_url: str | None
) -> None:
    home = rt.settings.home_path()
    _w, load = _migrated(rt, tmp_path, "rst-crash")
    view = start_restore(rt, "rst-crash")
    _small_batches(rt, view["id"])
    rng = random.Random(1202)
    kills = 0
    load.start()
    try:
        for point, n in [
            ("rewrap:wrapped", 1),
            ("cutover:flipped", 1),
            ("move:mid-batch", 1),
            ("move:mid-file", 1),
            ("move:mid-file", 2),
            ("random", 0),
            ("random", 0),
        ]:
            if job(rt, view["id"])["state"] == "succeeded":
                break
            if point == "random":
                code = _worker(home, db_url, view["id"], "-", 0, kill_after=rng.uniform(0.05, 0.8))
            else:
                code = _worker(home, db_url, view["id"], point, n)
            kills += code == -9
        assert _worker(home, db_url, view["id"], "-", 0) == 0
        assert job(rt, view["id"])["state"] == "succeeded", job(rt, view["id"])
    finally:
        load.stop()
    assert kills >= 3, f"only {kills} kills landed"
    _check_restored(rt, "rst-crash", load)


def test_restore_to_byok_turns_off_features_the_sql_layout_cannot_hold(
    sqlite_rt: Runtime, tmp_path: Path
) -> None:
    rt = sqlite_rt
    from keyshift.control import environments

    _migrated(rt, tmp_path, "rst-feat")
    environments.enable_feature(rt, "rst-feat", "search")
    environments.enable_feature(rt, "rst-feat", "audit")
    view = start_restore(rt, "rst-feat")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    shown = environments.show_environment(rt, "rst-feat")
    assert shown["features"] == ["audit"]
    assert shown["sql_restriction"] is True


def _cli(home: Path, url: str | None) -> list[str]:
    import sys

    exe = Path(sys.executable).parent / "keyshift"
    base = (
        [str(exe)] if exe.exists() else [sys.executable, "-c", "from keyshift.cli.main import main; main()"]
    )
    return [*base, "--home", str(home), *(["--database-url", url] if url else [])]


def _progress(rt: Runtime, job_id: str) -> tuple[Any, ...]:
    from keyshift.jobs import store

    with rt.transaction() as s:
        j = store.find_job(s, job_id)
        return (j.state, j.phase, j.items_done, j.updated_at)


def test_keyshift_worker_process_killed_during_restore_then_another_resumes(
    rt: Runtime, tmp_path: Path, db_url: str | None
) -> None:
    import signal
    import subprocess
    import time

    home = rt.settings.home_path()
    _w, load = _migrated(rt, tmp_path, "rst-proc")
    view = start_restore(rt, "rst-proc")
    _small_batches(rt, view["id"])
    kills = 0
    load.start()
    try:
        for delay in (0.05, 0.3):
            before = _progress(rt, view["id"])
            proc = subprocess.Popen(
                [*_cli(home, db_url), "worker", "--lease-seconds", "0.5", "--idle-seconds", "0.05"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            until = time.monotonic() + 30
            while _progress(rt, view["id"]) == before and time.monotonic() < until:
                time.sleep(0.02)
            time.sleep(delay)
            if _progress(rt, view["id"])[0] != "succeeded":
                proc.send_signal(signal.SIGKILL)
                kills += 1
            else:  # the job ended before the kill: this worker would idle on; stop it gently
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            finally:  # never leave a worker running past the test
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            time.sleep(0.7)  # its leases run out
        done = subprocess.run(
            [*_cli(home, db_url), "--json", "worker", "--once", "--lease-seconds", "0.5"],
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        load.stop()
    assert kills >= 1
    assert job(rt, view["id"])["state"] == "succeeded", job(rt, view["id"])
    _check_restored(rt, "rst-proc", load)
