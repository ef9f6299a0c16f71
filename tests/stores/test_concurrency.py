"""Races and vault faults: concurrent first writes make one DEK, CAS loses no update, a vault
outage is a retryable error naming the environment with nothing stored, a transient one is retried."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keyshift.clock import FixedClock
from keyshift.db.models import Dek
from keyshift.errors import ConflictError, VaultUnavailableError
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore
from stores.helpers import make_env, snapshot


def _runtimes(shared_home: tuple[Path, str | None], clock: FixedClock, n: int) -> list[Runtime]:
    path, url = shared_home
    return [
        Runtime.open(home=path, database_url=url, clock=clock, principal="operator:test") for _ in range(n)
    ]


def _run(workers: list[Any]) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(fn: Any) -> Any:
        def go() -> None:
            try:
                fn()
            except BaseException as exc:  # collected and asserted on by the test
                errors.append(exc)

        return go

    threads = [threading.Thread(target=wrap(w)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_first_writes_create_exactly_one_dek(
    rt: Runtime, shared_home: tuple[Path, str | None], clock: FixedClock
) -> None:
    env_id = make_env(rt)
    rts = _runtimes(shared_home, clock, 4)
    barrier = threading.Barrier(4)
    try:

        def writer(r: Runtime, i: int) -> Any:
            def go() -> None:
                store = RecordStore(r, env_id)
                barrier.wait()
                store.put("t", f"r{i}", i)

            return go

        assert _run([writer(r, i) for i, r in enumerate(rts)]) == []
    finally:
        for r in rts:
            r.close()
    with rt.transaction() as s:
        deks = list(s.scalars(select(Dek).where(Dek.environment_id == env_id)))
    assert len(deks) == 1
    assert [RecordStore(rt, env_id).get("t", f"r{i}") for i in range(4)] == [0, 1, 2, 3]


def test_compare_and_swap_loses_no_update(
    rt: Runtime, shared_home: tuple[Path, str | None], clock: FixedClock
) -> None:
    env_id = make_env(rt)
    RecordStore(rt, env_id).put("counters", "c", {"n": 0})
    rts = _runtimes(shared_home, clock, 3)
    per_worker = 8
    conflicts = [0]
    try:

        def incrementer(r: Runtime) -> Any:
            def go() -> None:
                store = RecordStore(r, env_id)
                done = 0
                while done < per_worker:
                    rec = store.get_record("counters", "c")
                    try:
                        store.put("counters", "c", {"n": rec.value["n"] + 1}, expected_version=rec.version)
                        done += 1
                    except ConflictError:
                        conflicts[0] += 1

            return go

        assert _run([incrementer(r) for r in rts]) == []
    finally:
        for r in rts:
            r.close()
    rec = RecordStore(rt, env_id).get_record("counters", "c")
    assert rec.value == {"n": 3 * per_worker}
    assert rec.version == 3 * per_worker + 1


class FlakyVault:
    """A fake stand-in (named so) around the real vault: fails the next `fail` calls as unavailable."""

    def __init__(self, inner: Any, fail: int) -> None:
        self.inner, self.fail = inner, fail
        self.name, self.kind = inner.name, inner.kind

    def _maybe_fail(self) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise VaultUnavailableError("vault did not answer", code="vault_unavailable")

    def wrap(self, *a: Any, **kw: Any) -> Any:
        self._maybe_fail()
        return self.inner.wrap(*a, **kw)

    def unwrap(self, *a: Any, **kw: Any) -> Any:
        self._maybe_fail()
        return self.inner.unwrap(*a, **kw)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def _flaky(rt: Runtime, monkeypatch: pytest.MonkeyPatch, fail: int) -> FlakyVault:
    holder: dict[str, FlakyVault] = {}
    original = rt.vault

    def vault(name_or_id: str) -> Any:
        if "v" not in holder:
            holder["v"] = FlakyVault(original(name_or_id), fail)
        return holder["v"]

    monkeypatch.setattr(rt, "vault", vault)
    return vault("platform")


def test_vault_outage_is_retryable_names_the_environment_and_stores_nothing(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_id = make_env(rt, "outage-env")
    _flaky(rt, monkeypatch, fail=100)
    before = snapshot(rt, "data_records", "deks", env_id=env_id)
    with pytest.raises(VaultUnavailableError) as err:
        RecordStore(rt, env_id).put("t", "r", {"v": 1})
    assert "outage-env" in err.value.message and err.value.retryable and err.value.exit_code == 6
    assert snapshot(rt, "data_records", "deks", env_id=env_id) == before


def test_transient_vault_failure_is_retried(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    env_id = make_env(rt)
    flaky = _flaky(rt, monkeypatch, fail=2)
    RecordStore(rt, env_id).put("t", "r", {"v": 1})
    assert flaky.fail == 0
    assert RecordStore(rt, env_id).get("t", "r") == {"v": 1}
