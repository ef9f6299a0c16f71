"""Records (SQL store) on SQLite and PostgreSQL: round trips, CAS, bad input, tampering."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from keyshift.db.models import DataRecord
from keyshift.errors import ConflictError, IntegrityError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore
from stores.helpers import make_env, snapshot

DATA = ("data_records", "deks", "dek_wraps")


@pytest.fixture
def store(rt: Runtime) -> RecordStore:
    return RecordStore(rt, make_env(rt))


def test_json_and_bytes_values_round_trip(store: RecordStore) -> None:
    store.put("accounts", "a1", {"name": "Fabrikam", "n": [1, 2.5, None, True]})
    store.put("accounts", "a2", b"\x00\x01raw")
    store.put("accounts", "a3", "just a string")
    assert store.get("accounts", "a1") == {"name": "Fabrikam", "n": [1, 2.5, None, True]}
    assert store.get("accounts", "a2") == b"\x00\x01raw"
    assert store.get("accounts", "a3") == "just a string"


def test_no_plaintext_in_the_database(rt: Runtime, store: RecordStore) -> None:
    store.put("accounts", "a1", {"name": "Fabrikam-secret-name"})
    with rt.transaction() as s:
        blob = s.scalars(select(DataRecord.value).where(DataRecord.environment_id == store.env_id)).one()
    assert b"Fabrikam-secret-name" not in blob
    dump = repr(snapshot(rt, *DATA)).encode()
    assert b"Fabrikam-secret-name" not in dump


def test_versions_grow_and_cas_refuses_a_stale_write(rt: Runtime, store: RecordStore) -> None:
    assert store.put("t", "r", {"v": 1}) == 1
    assert store.put("t", "r", {"v": 2}) == 2
    assert store.put("t", "r", {"v": 3}, expected_version=2) == 3
    before = snapshot(rt, *DATA)
    with pytest.raises(ConflictError) as err:
        store.put("t", "r", {"v": "lost"}, expected_version=2)
    assert err.value.code == "version_conflict"
    with pytest.raises(ConflictError):
        store.put("t", "r", {"v": "lost"}, expected_version=0)
    assert snapshot(rt, "data_records") == {"data_records": before["data_records"]}
    assert store.get_record("t", "r").version == 3
    assert store.get("t", "r") == {"v": 3}
    assert store.put("t", "new", {"v": 0}, expected_version=0) == 1


def test_put_many_scan_and_delete(store: RecordStore) -> None:
    n = store.put_many("people", [(f"p{i:04d}", {"i": i}) for i in range(250)])
    assert n == 250
    page = store.scan("people", limit=100)
    assert [r.id for r in page] == [f"p{i:04d}" for i in range(100)]
    rest = store.scan("people", after=page[-1].id, limit=1000)
    assert len(rest) == 150 and rest[0].id == "p0100"
    assert [r.value["i"] for r in store.iter_all("people", page=64)] == list(range(250))
    store.put_many("people", [("p0001", {"i": "again"})])
    assert store.get_record("people", "p0001").version == 2
    store.delete("people", "p0001")
    with pytest.raises(NotFoundError) as err:
        store.get("people", "p0001")
    assert err.value.code == "record_not_found"
    assert {"table": "people", "records": 249} in store.tables()


def test_delete_with_expected_version(rt: Runtime, store: RecordStore) -> None:
    store.put("t", "r", 1)
    with pytest.raises(ConflictError):
        store.delete("t", "r", expected_version=7)
    store.delete("t", "r", expected_version=1)
    with pytest.raises(NotFoundError):
        store.delete("t", "r")


def test_unknown_table_is_not_found(store: RecordStore) -> None:
    store.put("t", "r", 1)
    for call in (
        lambda: store.get("nope", "r"),
        lambda: store.scan("nope"),
        lambda: store.delete("nope", "r"),
    ):
        with pytest.raises(NotFoundError) as err:
            call()
        assert err.value.code == "table_not_found"


BAD_NAMES = [
    ("t", "../etc"),
    ("t", "/abs"),
    ("t", "a\x00b"),
    ("t", "a\\b"),
    ("t", "x" * 513),
    ("t", ".."),
    ("t", ""),
    ("../t", "r"),
    ("t/x", "r"),
    ("", "r"),
    ("t" * 129, "r"),
]


def test_escaping_or_bad_names_are_refused_and_nothing_changes(rt: Runtime, store: RecordStore) -> None:
    store.put("t", "ok", {"keep": True})
    before = snapshot(rt, *DATA)
    for table, rid in BAD_NAMES:
        with pytest.raises(UsageError):
            store.put(table, rid, {"x": 1})
        with pytest.raises(UsageError):
            store.put_many(table, [("fine", 1), (rid, 1)])
        with pytest.raises(UsageError):
            store.get(table, rid)
        with pytest.raises(UsageError):
            store.delete(table, rid)
    assert snapshot(rt, *DATA) == before


def test_non_json_values_are_refused(rt: Runtime, store: RecordStore) -> None:
    store.put("t", "ok", 1)
    before = snapshot(rt, *DATA)
    for value in ({1, 2}, float("nan"), object(), {"a": float("inf")}):
        with pytest.raises(UsageError) as err:
            store.put("t", "bad", value)
        assert err.value.code == "invalid_value"
        with pytest.raises(UsageError):
            store.put_many("t", [("ok2", 1), ("bad", value)])
    assert snapshot(rt, *DATA) == before


def test_tampered_ciphertext_is_an_integrity_error_naming_the_record(rt: Runtime, store: RecordStore) -> None:
    store.put_many("t", [("a", {"v": "a"}), ("b", {"v": "b"})])
    with rt.transaction() as s:
        mine = DataRecord.environment_id == store.env_id
        blob = s.scalars(select(DataRecord.value).where(mine, DataRecord.record_id == "a")).one()
        flipped = blob[:-1] + bytes([blob[-1] ^ 1])
        s.execute(update(DataRecord).where(mine, DataRecord.record_id == "a").values(value=flipped))
    with pytest.raises(IntegrityError) as err:
        store.get("t", "a")
    assert "t/a" in err.value.message
    assert store.get("t", "b") == {"v": "b"}  # the neighbour is untouched and readable
    with pytest.raises(IntegrityError):
        store.scan("t")


def test_ciphertext_moved_to_another_record_fails(rt: Runtime, store: RecordStore) -> None:
    store.put_many("t", [("a", {"v": "a"}), ("b", {"v": "b"})])
    with rt.transaction() as s:
        mine = DataRecord.environment_id == store.env_id
        blob = s.scalars(select(DataRecord.value).where(mine, DataRecord.record_id == "a")).one()
        s.execute(update(DataRecord).where(mine, DataRecord.record_id == "b").values(value=blob))
    with pytest.raises(IntegrityError) as err:
        store.get("t", "b")
    assert "t/b" in err.value.message


def test_ciphertext_moved_to_another_environment_fails(rt: Runtime) -> None:
    a = RecordStore(rt, make_env(rt, "env-a"))
    b = RecordStore(rt, make_env(rt, "env-b", tenant="other"))
    a.put("t", "r", {"owner": "a"})
    b.put("t", "r", {"owner": "b"})
    with rt.transaction() as s:
        blob = s.scalars(select(DataRecord.value).where(DataRecord.environment_id == a.env_id)).one()
        s.execute(update(DataRecord).where(DataRecord.environment_id == b.env_id).values(value=blob))
    with pytest.raises(IntegrityError):
        b.get("t", "r")
    assert a.get("t", "r") == {"owner": "a"}


def test_records_are_isolated_per_environment(rt: Runtime) -> None:
    a = RecordStore(rt, make_env(rt, "env-a"))
    b = RecordStore(rt, make_env(rt, "env-b"))
    a.put("t", "r", 1)
    with pytest.raises(NotFoundError):
        b.get("t", "r")


def test_table_ad_is_byte_for_byte_the_associated_data() -> None:
    from keyshift.crypto.records import AssociatedData
    from keyshift.stores.records import TableAd

    base = AssociatedData("ten_1", "env_é", "records", "accounts", "")
    fast = TableAd(base)
    for rid in ("a", "ünïcode-id", "x" * 512):
        made = fast.with_record(rid)
        ref = AssociatedData("ten_1", "env_é", "records", "accounts", rid)
        assert made.encode() == ref.encode() and made == ref
