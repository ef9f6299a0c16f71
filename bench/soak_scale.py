"""The soak's trial at scale: a re-encrypting BYOK -> customer-key link of a larger environment
(default 100,000 rows, 2,000 audit events, 24 files one of which spans several segments) through
worker kills (SIGKILL) and a vault outage, then a byte-level check.

The job (re-encrypting every row, moving audit events and files out of SQL) is driven by:
1. 1-2 `keyshift worker` processes killed with SIGKILL at a random moment after they moved it on;
2. a worker process whose vault goes down at a random moment (every call then fails as
   unreachable, `vaults/faults.py`); its unwrapped keys live at most 1 s
   (`KEYSHIFT_DEK_CACHE_MAX_AGE_SECONDS=1`), so it meets the outage within a second: the job must
   stop `failed` with `vault_unavailable` (unless it ended first);
3. `job resume` (the service call behind it), then a last worker to the end.
Then: the job succeeded; every row reads back its exact value (0 lost, 0 unreadable) and the
environment holds exactly as many rows as written (0 duplicated); every row is under a DEK born
in the job (re-encrypted); every audit event is there exactly once; every file has its bytes.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

ROWS_DEFAULT = 100_000
EVENTS = 2_000
FILES = 24
LEASE = 0.5


def _outage_child(home: str, url: str | None, job_id: str, delay: float) -> None:
    """A worker whose vault goes down `delay` seconds in (forked; exits 0 whatever happens)."""
    os.environ["KEYSHIFT_DEK_CACHE_MAX_AGE_SECONDS"] = "1"
    try:
        from keyshift.jobs.runner import Worker
        from keyshift.runtime import Runtime
        from keyshift.vaults.faults import FaultyVault

        with Runtime.open(home=home, database_url=url, principal="operator:soak-outage") as rt:
            faulty: list[FaultyVault] = []
            real = rt.vault

            def vault(ref: Any) -> FaultyVault:
                fv = FaultyVault(real(ref))
                if down.is_set():
                    fv.go_down()
                faulty.append(fv)
                return fv

            down = threading.Event()

            def go_down() -> None:
                down.set()
                for fv in list(faulty):
                    fv.go_down()

            timer = threading.Timer(delay, go_down)
            timer.start()
            rt.vault = vault  # type: ignore[method-assign,assignment]
            try:
                Worker(rt, lease_seconds=LEASE, poll_seconds=0.02).run_job(job_id)
            finally:
                timer.cancel()
    except BaseException:
        os._exit(3)
    os._exit(0)


class ScaleTrial:
    kind = "scale"

    def __init__(self, n: int, root: Path, url: str | None, rng: random.Random, rows: int) -> None:
        self.n, self.url, self.rng, self.rows = n, url, rng, rows
        self.home = root / f"trial-{n}"
        self.kills = 0
        self.phases: list[int] = []
        self.verified: dict[str, int] = {}
        self.outage = "not reached"
        self.timing: dict[str, float] = {}

    def run(self) -> list[str]:
        from keyshift.bootstrap import init_home
        from keyshift.runtime import Runtime

        init_home(self.home, database_url=self.url)
        with Runtime.open(home=self.home, database_url=self.url, principal="operator:soak") as rt:
            return self._run(rt)

    def _run(self, rt: Any) -> list[str]:
        from bench.soak import _worker_killed, _worker_to_end
        from keyshift.control import tenants
        from keyshift.jobs import store
        from keyshift.migrate.link import start_link
        from migrate.helpers import byok_world, customer_key, make_policy

        w = byok_world(rt, self.home, envs=("scale",))
        env_id = w["envs"]["scale"]
        t0 = time.monotonic()
        expected = self._fill(rt, env_id)
        self.timing["fill"] = time.monotonic() - t0
        vault, key = customer_key(rt, "scale-kv", "scale-cmk")
        make_policy(rt, w["tenant"], "scale-pol", vault, key)
        tenants.byok_flag_remove(rt, w["tenant"], ticket="SOAK-2")
        view = start_link(rt, "scale-pol", "scale", reencrypt=True)
        job_id = view["id"]
        with rt.transaction() as s:  # many batches: many moments to be killed in
            j = store.find_job(s, job_id)
            j.params = {
                **j.params,
                "row_batch": max(200, self.rows // 40),
                "audit_batch": 100,
                "file_batch": 2,
            }
        for _ in range(self.rng.randint(1, 2)):
            if self._state(rt, job_id) == "succeeded":
                break
            phase = _worker_killed(self.home, self.url, rt, job_id, self.rng.uniform(0.2, 3.0))
            if phase is not None:
                self.kills += 1
                self.phases.append(phase)
            time.sleep(LEASE + 0.2)  # the killed worker's leases run out
        self.timing["kills"] = time.monotonic() - t0 - self.timing["fill"]
        bad = self._outage(rt, job_id)
        self.timing["outage"] = time.monotonic() - t0 - self.timing["fill"] - self.timing["kills"]
        _worker_to_end(self.home, self.url)
        self.timing["to_end"] = time.monotonic() - t0 - sum(self.timing.values())
        state = self._state(rt, job_id)
        if state != "succeeded":
            bad.append(f"scale job ended {state}")
        return bad + self._verify(rt, env_id, job_id, expected)

    def _fill(self, rt: Any, env_id: str) -> dict[str, Any]:
        from keyshift.stores.audit import AuditLog
        from keyshift.stores.files import FileStore
        from keyshift.stores.records import RecordStore

        rows = {f"r{i:07d}": {"i": i, "name": "Customer", "notes": "x" * (i % 97)} for i in range(self.rows)}
        items = list(rows.items())
        store = RecordStore(rt, env_id)
        for lo in range(0, len(items), 5_000):
            store.put_many("t", items[lo : lo + 5_000])
        log = AuditLog(rt, env_id)
        events = {log.append({"i": i, "who": "soak"}): {"i": i, "who": "soak"} for i in range(EVENTS)}
        fs = FileStore(rt, env_id)
        files = {f"docs/f{i:03d}.bin": os.urandom(100 + i * 997) for i in range(FILES - 1)}
        files["big/several-segments.bin"] = os.urandom(5 << 19)
        for path, body in files.items():
            fs.put(path, body)
        return {"rows": rows, "events": events, "files": files}

    def _outage(self, rt: Any, job_id: str) -> list[str]:
        from keyshift.jobs import store

        if self._state(rt, job_id) == "succeeded":
            self.outage = "job ended before"
            return []
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(
            target=_outage_child, args=(str(self.home), self.url, job_id, self.rng.uniform(0.2, 2.0))
        )
        proc.start()
        proc.join(300)
        if proc.is_alive():
            proc.kill()
            proc.join()
            return ["the outage worker did not stop"]
        with rt.transaction() as s:
            view = store.to_view(store.find_job(s, job_id))
        if view["state"] == "succeeded":
            self.outage = "job ended before"
            return []
        code = (view.get("error") or {}).get("code")
        if view["state"] != "failed" or code != "vault_unavailable":
            return [f"during the vault outage the job became {view['state']} ({code}), not failed"]
        self.outage = f"failed in phase {view['phase']}, resumed"
        time.sleep(LEASE + 0.2)
        store.resume(rt, job_id)
        return []

    def _verify(self, rt: Any, env_id: str, job_id: str, expected: dict[str, Any]) -> list[str]:
        from sqlalchemy import func, select

        from keyshift.db.models import DataRecord, Dek
        from keyshift.stores.audit import AuditLog
        from keyshift.stores.files import FileStore
        from keyshift.stores.keys import data_keys
        from keyshift.stores.records import RecordStore

        data_keys(rt).flush()
        bad: list[str] = []
        got: dict[str, Any] = {}
        unreadable = 0
        try:
            for r in RecordStore(rt, env_id).iter_all("t"):
                got[r.id] = r.value
        except Exception as exc:
            unreadable += 1
            bad.append(f"rows unreadable: {type(exc).__name__}")
        lost = [k for k in expected["rows"] if got.get(k) != expected["rows"][k]]
        if lost:
            bad.append(f"{len(lost)} rows lost or changed (e.g. {lost[:3]})")
        started = self._started(rt, job_id)
        with rt.transaction() as s:
            here = (DataRecord.environment_id == env_id, DataRecord.table_name == "t")
            stored = int(s.scalar(select(func.count()).select_from(DataRecord).where(*here)) or 0)
            deks = set(s.scalars(select(DataRecord.dek_id).where(*here).distinct()))
            fresh = set(
                s.scalars(
                    select(Dek.id).where(
                        Dek.environment_id == env_id,
                        Dek.store == "records",
                        Dek.created_at >= started,
                    )
                )
            )
        if stored != len(expected["rows"]):
            bad.append(f"{stored} rows stored for {len(expected['rows'])} written")
        if not deks <= fresh:
            bad.append(f"{len(deks - fresh)} DEK(s) of rows predate the job: rows not re-encrypted")
        events: dict[str, Any] = {}
        for e in AuditLog(rt, env_id).query(limit=10_000):
            if e["id"] in events:
                bad.append(f"audit event {e['id']} twice")
            events[e["id"]] = e["event"]
        if events != expected["events"]:
            bad.append(f"audit events differ: {len(events)} read, {len(expected['events'])} written")
        fs = FileStore(rt, env_id)
        for path, body in expected["files"].items():
            if fs.get(path) != body:
                bad.append(f"file {path}: bytes differ")
        self.verified = {
            "rows": len(got) - len(lost),
            "events": len(events),
            "files": len(expected["files"]),
            "unreadable": unreadable,
        }
        return bad

    @staticmethod
    def _started(rt: Any, job_id: str) -> Any:
        from keyshift.jobs import store

        with rt.transaction() as s:
            return store.find_job(s, job_id).created_at

    @staticmethod
    def _state(rt: Any, job_id: str) -> str:
        from keyshift.jobs import store

        with rt.transaction() as s:
            return str(store.find_job(s, job_id).state)
