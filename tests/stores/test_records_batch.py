"""Batched reads and compare-and-swap writes of the record store (get_many, put_many_if_versions)
on SQLite and PostgreSQL: all win, lost races (changed / deleted rows), tampered rows, bad input,
and write hooks that follow exactly the rows written."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from keyshift.db.models import DataRecord
from keyshift.errors import IntegrityError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores import records as records_mod
from keyshift.stores.records import RecordStore
from stores.helpers import make_env, snapshot

DATA = ("data_records", "deks", "dek_wraps")


@pytest.fixture
def store(rt: Runtime) -> RecordStore:
    return RecordStore(rt, make_env(rt))


def _rows(rt: Runtime, env_id: str) -> dict[str, tuple[int, bytes]]:
    with rt.transaction() as s:
        return {
            rid: (ver, bytes(blob))
            for rid, ver, blob in s.execute(
                select(DataRecord.record_id, DataRecord.version, DataRecord.value).where(
                    DataRecord.environment_id == env_id
                )
            )
        }


def test_get_many_reads_in_id_order_and_leaves_out_absent_ids(store: RecordStore) -> None:
    store.put_many("t", [(f"r{i}", {"n": i}) for i in range(5)])
    store.put("t", "r2", {"n": 22})
    got = store.get_many("t", ["r3", "nope", "r0", "r2", "r3"])
    assert [(r.id, r.value, r.version) for r in got] == [
        ("r0", {"n": 0}, 1),
        ("r2", {"n": 22}, 2),
        ("r3", {"n": 3}, 1),
    ]
    assert store.get_many("t", []) == []
    assert store.get_many("other", ["r0"]) == []


def test_get_many_refuses_a_tampered_row(rt: Runtime, store: RecordStore) -> None:
    store.put_many("t", [("a", {"v": "a"}), ("b", {"v": "b"})])
    with rt.transaction() as s:
        mine = DataRecord.environment_id == store.env_id
        blob = s.scalars(select(DataRecord.value).where(mine, DataRecord.record_id == "a")).one()
        s.execute(
            update(DataRecord)
            .where(mine, DataRecord.record_id == "a")
            .values(value=blob[:-1] + bytes([blob[-1] ^ 1]))
        )
    with pytest.raises(IntegrityError) as err:
        store.get_many("t", ["a", "b"])
    assert "t/a" in err.value.message and "Fabrikam" not in err.value.message
    assert [r.value for r in store.get_many("t", ["b"])] == [{"v": "b"}]


def test_all_rows_at_their_versions_are_written_in_one_call(rt: Runtime, store: RecordStore) -> None:
    store.put_many("t", [(f"r{i}", {"n": i}) for i in range(10)])
    before = _rows(rt, store.env_id)
    recs = store.get_many("t", [f"r{i}" for i in range(10)])
    won = store.put_many_if_versions("t", [(r.id, {**r.value, "x": 1}, r.version) for r in recs])
    assert won == sorted(f"r{i}" for i in range(10))
    after = _rows(rt, store.env_id)
    for rid, (ver, blob) in after.items():
        assert ver == before[rid][0] + 1 and blob != before[rid][1]
    assert [r.value for r in store.get_many("t", ["r0", "r9"])] == [{"n": 0, "x": 1}, {"n": 9, "x": 1}]


def test_lost_races_are_left_exactly_as_the_client_wrote_them(rt: Runtime, store: RecordStore) -> None:
    store.put_many("t", [(f"r{i}", {"n": i}) for i in range(6)])
    recs = store.get_many("t", [f"r{i}" for i in range(6)])
    # meanwhile a client writes r1, deletes r2; r5's version moves twice
    store.put("t", "r1", {"client": True})
    store.delete("t", "r2")
    store.put("t", "r5", {"n": 5})
    store.put("t", "r5", {"n": 55})
    client = _rows(rt, store.env_id)
    won = store.put_many_if_versions("t", [(r.id, {"stale": r.value}, r.version) for r in recs])
    assert won == ["r0", "r3", "r4"]
    after = _rows(rt, store.env_id)
    assert "r2" not in after  # a deleted row is never recreated
    assert after["r1"] == client["r1"] and after["r5"] == client["r5"]  # byte for byte untouched
    assert store.get("t", "r1") == {"client": True} and store.get("t", "r5") == {"n": 55}
    assert store.get("t", "r0") == {"stale": {"n": 0}}


def test_absent_rows_are_not_created(rt: Runtime, store: RecordStore) -> None:
    store.put("t", "a", {"v": 1})
    assert store.put_many_if_versions("t", [("ghost", {"v": 2}, 1), ("a", {"v": 3}, 1)]) == ["a"]
    assert set(_rows(rt, store.env_id)) == {"a"}
    assert store.put_many_if_versions("empty", [("ghost", {"v": 2}, 1)]) == []
    assert store.put_many_if_versions("t", []) == []


@pytest.mark.parametrize(
    "items",
    [
        [("a", {"v": 1})],  # not a triple
        [("a", {"v": 1}, 0)],  # version 0 is not a CAS on an existing row
        [("a", {"v": 1}, True)],
        [("a", {"v": 1}, "1")],
        [("a", {"v": 1}, 1), ("a", {"v": 2}, 1)],  # the same id twice
        [("bad/id", {"v": 1}, 1)],
        [("a", {1, 2}, 1)],  # not JSON
    ],
)
def test_bad_input_is_refused_and_changes_nothing(rt: Runtime, store: RecordStore, items: Any) -> None:
    store.put("t", "a", {"v": 0})
    before = snapshot(rt, *DATA)
    with pytest.raises(UsageError) as err:
        store.put_many_if_versions("t", items)
    assert err.value.exit_code == 2
    assert snapshot(rt, *DATA) == before


def test_bad_table_is_refused(rt: Runtime, store: RecordStore) -> None:
    before = snapshot(rt, *DATA)
    with pytest.raises(UsageError):
        store.put_many_if_versions("../t", [("a", 1, 1)])
    with pytest.raises(UsageError):
        store.get_many("../t", ["a"])
    assert snapshot(rt, *DATA) == before


def test_write_hooks_cover_only_the_rows_written(
    rt: Runtime, store: RecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording FAKE write hook stands in for the derived indexes: after a lost race it must be
    prepared again for the winners and applied once, with them only, in the committing transaction."""
    store.put_many("t", [(f"r{i}", {"n": i}) for i in range(4)])
    recs = store.get_many("t", [f"r{i}" for i in range(4)])
    store.put("t", "r2", {"client": True})
    prepared: list[list[str]] = []
    applied: list[tuple[list[str], int]] = []

    def fake_hook(rt_: Runtime, env: Any, table: str, changes: list[tuple[str, Any]]) -> Any:
        ids = [rid for rid, _ in changes]
        prepared.append(ids)

        def apply(s: Session) -> None:
            n = s.execute(
                select(DataRecord.record_id).where(
                    DataRecord.environment_id == store.env_id, DataRecord.record_id.in_(ids)
                )
            ).all()
            applied.append((ids, len(n)))

        return apply

    monkeypatch.setattr(records_mod, "_resolved_hooks", [fake_hook])
    won = store.put_many_if_versions("t", [(r.id, {"m": r.value}, r.version) for r in recs])
    assert won == ["r0", "r1", "r3"]
    assert prepared == [["r0", "r1", "r2", "r3"], ["r0", "r1", "r3"]]
    assert applied == [(["r0", "r1", "r3"], 3)]  # once, with the winners only
    assert store.get("t", "r2") == {"client": True} and store.get("t", "r3") == {"m": {"n": 3}}


def test_a_batch_of_one_row_wins_or_loses_like_the_others(rt: Runtime, store: RecordStore) -> None:
    store.put_many("t", [("a", {"v": 1}), ("b", {"v": 1})])
    [a] = store.get_many("t", ["a"])
    [b] = store.get_many("t", ["b"])
    store.put("t", "b", {"client": True})
    client = _rows(rt, store.env_id)
    assert store.put_many_if_versions("t", [("b", {"stale": 1}, b.version)]) == []
    assert _rows(rt, store.env_id) == client
    assert store.put_many_if_versions("t", [("a", {"v": 2}, a.version)]) == ["a"]
    assert store.get("t", "a") == {"v": 2} and store.get("t", "b") == {"client": True}
    store.delete("t", "a")
    assert store.put_many_if_versions("t", [("a", {"v": 3}, a.version + 1)]) == []
    assert "a" not in _rows(rt, store.env_id)
