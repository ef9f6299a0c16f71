"""Crash/load soak for the moves of file and audit data: `python -m bench.soak [--seconds N]`.

Repeated trials, alternating two kinds, each on a fresh home (SQLite by default, or a fresh
PostgreSQL schema per trial with `--postgres URL`):
* link:    a BYOK environment migrates to a customer-managed key (audit and files leave SQL);
* restore: after a link, `env restore --before-migration` brings it back to BYOK and SQL.
During the job under test a client load (tests/migrate/live_load.py) writes, overwrites and
deletes files, puts records and appends audit events, and reads them back checking for stale or
failed reads; meanwhile a real `keyshift worker` subprocess runs the job and is killed with
SIGKILL at a random moment, 1-3 times; a last worker resumes the job to its end. Then a
byte-level check: every acknowledged write holds exactly its last acknowledged bytes, deleted
files stay deleted, every audit event is there exactly once, paths that collided in the old
directory mapping (`coll` / `coll.ksf/y`) and temp-like names (`.tmp-...`) are intact, and the
file store's temp directory holds nothing maintenance cannot clean.

The first trial is at scale (bench/soak_scale.py, `--scale-rows`, default 100,000 rows): a
re-encrypting link through 1-2 worker kills and a vault outage, `job resume`, then the same
byte-level check (0 lost, 0 duplicated, 0 unreadable, every row re-encrypted).

Bounded in time (default: trials start for 240 s; the one running at the deadline finishes,
so about 5 minutes in all). Prints
each trial, then trials / failures / what was verified; exits 1 on any failure. Not part of
`make test`; run it with `make soak`.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the live load and world helpers the tests use

os.environ.setdefault("KEYSHIFT_STATE_REFRESH_SECONDS", "0.2")  # short settle waits

TRICKY = {
    "coll": b"the file coll",
    "coll.ksf/y": b"under coll.ksf",
    "coll.ksf~/z": b"under coll.ksf~",
    ".tmp-0123456789abcdef.part": b"named like a temp file",
    "x/.tmp-abc": b"another temp-like name",
}
LEASE = "0.5"

from bench.soak_scale import ScaleTrial  # noqa: E402 - after the tests path is set


def _keyshift() -> list[str]:
    exe = Path(sys.executable).parent / "keyshift"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from keyshift.cli.main import main; main()"]


def _cli(home: Path, url: str | None) -> list[str]:
    return [*_keyshift(), "--home", str(home), *(["--database-url", url] if url else [])]


def _progress(rt: Any, job_id: str) -> tuple[Any, ...]:
    from keyshift.jobs import store

    with rt.transaction() as s:
        j = store.find_job(s, job_id)
        return (j.state, j.phase, j.items_done, j.updated_at)


def _worker_killed(home: Path, url: str | None, rt: Any, job_id: str, delay: float) -> int | None:
    """A `keyshift worker` subprocess, SIGKILLed `delay` seconds after it first moved the job on.
    Returns the job's phase at the kill, or None when the job ended first (no kill)."""
    cmd = [*_cli(home, url), "worker", "--lease-seconds", LEASE, "--idle-seconds", "0.05"]
    before = _progress(rt, job_id)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        until = time.monotonic() + 20
        while _progress(rt, job_id) == before and time.monotonic() < until:
            time.sleep(0.02)
        time.sleep(delay)
        now = _progress(rt, job_id)
        if now[0] == "succeeded":
            return None
        proc.send_signal(signal.SIGKILL)
        return int(now[1])
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()


def _worker_to_end(home: Path, url: str | None) -> None:
    time.sleep(float(LEASE) + 0.2)  # the killed worker's lease runs out
    cmd = [*_cli(home, url), "--json", "worker", "--once", "--lease-seconds", LEASE]
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)


class Trial:
    def __init__(self, n: int, kind: str, root: Path, url: str | None, rng: random.Random) -> None:
        self.n, self.kind, self.url, self.rng = n, kind, url, rng
        self.home = root / f"trial-{n}"
        self.kills = 0
        self.phases: list[int] = []  # the job phase each kill landed in
        self.verified: dict[str, int] = {}

    def run(self) -> list[str]:
        from keyshift.bootstrap import init_home
        from keyshift.runtime import Runtime

        init_home(self.home, database_url=self.url)
        with Runtime.open(home=self.home, database_url=self.url, principal="operator:soak") as rt:
            return self._run(rt)

    def _run(self, rt: Any) -> list[str]:
        from keyshift.control import tenants
        from keyshift.jobs import store
        from keyshift.migrate.link import start_link
        from keyshift.migrate.restore import start_restore
        from keyshift.stores.files import FileStore
        from keyshift.stores.keys import data_keys
        from migrate.helpers import byok_world, customer_key, fill, make_policy, run
        from migrate.live_load import LiveLoad

        w = byok_world(rt, self.home, envs=("soak",))
        env_id = w["envs"]["soak"]
        fill(rt, env_id, rows=30, events=12)
        fs = FileStore(rt, env_id)
        for path, body in TRICKY.items():
            fs.put(path, body)
        load = LiveLoad(rt, env_id, seed=self.rng.randrange(1 << 30), pause=0.003)
        load.seed_files()
        vault, key = customer_key(rt, "soak-kv", "soak-cmk")
        make_policy(rt, w["tenant"], "soak-pol", vault, key)
        tenants.byok_flag_remove(rt, w["tenant"], ticket="SOAK-1")
        view = start_link(rt, "soak-pol", "soak")
        if self.kind == "restore":
            if run(rt, view["id"]) != "succeeded":
                return [f"setup link ended {self._state(rt, view['id'])}"]
            load.bump_all()
            view = start_restore(rt, "soak")
        with rt.transaction() as s:  # small batches: more moments to be killed in
            j = store.find_job(s, view["id"])
            j.params = {**j.params, "dek_batch": 1, "audit_batch": 16, "file_batch": 1}
        load.start()
        try:
            for _ in range(self.rng.randint(1, 3)):
                if self._state(rt, view["id"]) == "succeeded":
                    break
                phase = _worker_killed(self.home, self.url, rt, view["id"], self.rng.uniform(0.0, 3.0))
                if phase is not None:
                    self.kills += 1
                    self.phases.append(phase)
                time.sleep(float(LEASE) + 0.2)  # the killed worker's lease runs out
            _worker_to_end(self.home, self.url)
        finally:
            load.stop()
        bad: list[str] = []
        state = self._state(rt, view["id"])
        if state != "succeeded":
            bad.append(f"{self.kind} job ended {state}")
        data_keys(rt).flush()
        bad += load.verify()
        for path, body in TRICKY.items():
            try:
                if fs.get(path) != body:
                    bad.append(f"{path}: bytes differ")
            except Exception as exc:
                bad.append(f"{path}: {type(exc).__name__}")
        bad += self._temp_files(rt)
        self.verified = {
            "files": len([v for v in load.version.values() if v >= 0]) + len(TRICKY),
            "deleted": len([v for v in load.version.values() if v < 0]),
            "rows": len(load.rows),
            "events": len(load.events),
            "reads": load.counts["reads"],
            "writes": load.counts["file_writes"] + load.counts["row_writes"] + load.counts["events"],
        }
        return bad

    def _temp_files(self, rt: Any) -> list[str]:
        """Killed copies may orphan temp files: all in the temp directory, all cleanable."""
        from keyshift.stores.file_backends import backend

        clean = getattr(backend(rt, "file_storage"), "clean_temp", None)
        if clean is None:
            return ["the file store cannot clean its temp files"]
        self.verified["temp_removed"] = clean(max_age=0)["removed"]
        root = rt.settings.home_path() / "files"
        stray = [str(p) for p in root.rglob("*.part")]
        return [f"temp files left after cleaning: {stray[:3]}"] if stray else []

    @staticmethod
    def _state(rt: Any, job_id: str) -> str:
        from keyshift.jobs import store

        with rt.transaction() as s:
            return str(store.find_job(s, job_id).state)


def _pg_schema(base: str) -> tuple[str, Any]:
    from sqlalchemy import create_engine, text

    admin = create_engine(base)
    name = f"ks_soak_{secrets.token_hex(5)}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in base else "?"

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()

    return f"{base}{sep}options=-csearch_path%3D{name}", drop


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=240.0, help="start trials for this long (default 240)")
    ap.add_argument("--postgres", metavar="URL", help="run on PostgreSQL (a fresh schema per trial)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--scale-rows",
        type=int,
        default=100_000,
        help="rows of the first trial, a re-encrypting link at scale through kills and a vault "
        "outage (bench/soak_scale.py); 0 skips it (default 100000)",
    )
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="keyshift-soak-"))
    deadline = time.monotonic() + args.seconds
    print(
        f"soak: seed {seed}, {args.seconds:.0f} s, {'PostgreSQL' if args.postgres else 'SQLite'}, in {root}"
    )
    trials = failures = kills = 0
    totals: dict[str, int] = {}
    n = 0
    try:
        while time.monotonic() < deadline:
            scale = n == 0 and args.scale_rows > 0
            kind = "scale" if scale else ("restore", "link")[n % 2]
            n += 1
            url, drop = _pg_schema(args.postgres) if args.postgres else (None, None)
            trial: Trial | ScaleTrial = (
                ScaleTrial(n, root, url, rng, args.scale_rows) if scale else Trial(n, kind, root, url, rng)
            )
            started = time.monotonic()
            try:
                bad = trial.run()
            except Exception:
                bad = ["crashed: " + traceback.format_exc(limit=3).replace("\n", " | ")]
            finally:
                if drop is not None:
                    drop()
                shutil.rmtree(trial.home, ignore_errors=True)
            trials += 1
            kills += trial.kills
            for k, v in trial.verified.items():
                totals[k] = totals.get(k, 0) + v
            status = "ok" if not bad else f"FAILED ({len(bad)})"
            print(
                f"trial {n:3d} {kind:7s} kills {trial.kills} (in phases {trial.phases}) "
                f"{time.monotonic() - started:5.1f}s "
                f"{status} {trial.verified}"
                + (
                    f" vault outage: {trial.outage}; seconds "
                    + ", ".join(f"{k} {v:.0f}" for k, v in trial.timing.items())
                    if isinstance(trial, ScaleTrial)
                    else ""
                ),
                flush=True,
            )
            for line in bad[:10]:
                print(f"    {line}")
            failures += bool(bad)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"trials: {trials}  failures: {failures}  worker kills (SIGKILL) landed: {kills}")
    print(
        "verified byte-for-byte after each trial: "
        + ", ".join(f"{v} {k}" for k, v in sorted(totals.items()))
        + " (files: last acknowledged bytes or deleted; rows; audit events exactly once; "
        "colliding and temp-like paths; no stale or failed read during the move; no stray temp file)"
    )
    return 1 if failures or trials == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
