"""A request already past its key check when the key goes finishes or fails cleanly: every batch of
records is all there or not at all, every file is whole or absent — never half-written."""

from __future__ import annotations

import threading
import time

from keyshift.control.monitor import monitor_once
from keyshift.control.revocation import reenable_environment
from keyshift.errors import KeyshiftError
from keyshift.stores.service import EnvironmentData

from .helpers import cmk_world, read_all, revoke

BATCH = 300
FILE = bytes(range(256)) * 8192  # 2 MiB


def test_requests_in_flight_finish_or_fail_cleanly(rt, clock):  # type: ignore[no-untyped-def]
    world = cmk_world(rt, rows=5)
    eid = world.envs["contoso-prod"]
    data = EnvironmentData(rt, eid)
    outcomes: dict[str, str] = {}
    stop = threading.Event()

    def write_batches() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            name = f"rows{k:04d}"
            try:
                data.records.put_many("t", [(f"{name}-{i:04d}", {"k": k, "i": i}) for i in range(BATCH)])
                outcomes[name] = "ok"
            except KeyshiftError as err:
                outcomes[name] = err.code
                time.sleep(0.01)

    def write_files() -> None:
        k = 0
        while not stop.is_set():
            k += 1
            name = f"big{k:04d}.bin"
            try:
                data.files.put(name, FILE)
                outcomes[name] = "ok"
            except KeyshiftError as err:
                outcomes[name] = err.code
                time.sleep(0.01)

    threads = [threading.Thread(target=write_batches), threading.Thread(target=write_files)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while sum(v == "ok" for v in outcomes.values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        undo = revoke(rt, "key_disabled", world, clock)
        assert monitor_once(rt)[world.policy]["environments_disabled"] == [eid]
        deadline = time.monotonic() + 20
        while (
            not any(k.startswith("rows") and v == "environment_disabled" for k, v in outcomes.items())
            or not any(k.startswith("big") and v == "environment_disabled" for k, v in outcomes.items())
        ) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    undo()
    reenable_environment(rt, eid)
    rows = read_all(rt, eid)
    batches = {k for k in outcomes if k.startswith("rows")}
    assert any(outcomes[b] == "ok" for b in batches) and any(outcomes[b] != "ok" for b in batches)
    for b in batches:
        present = {rid: v for rid, v in rows.items() if rid.startswith(b + "-")}
        assert len(present) in (0, BATCH), (b, outcomes[b], len(present))  # all or nothing
        if outcomes[b] == "ok":
            assert len(present) == BATCH
        for rid, v in present.items():
            assert v == {"k": int(b[4:]), "i": int(rid.split("-")[1])}
    listed = {f["path"] for f in data.files.list()}
    files = {k for k in outcomes if k.startswith("big")}
    assert any(outcomes[f] == "ok" for f in files)
    for f in files:
        if outcomes[f] == "ok":
            assert f in listed
        if f in listed:
            assert data.files.get(f) == FILE  # whole, never truncated
