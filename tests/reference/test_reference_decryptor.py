"""The reference decryptor (tools/keyshift_decrypt.py) against homes written by the current code.

It runs as its own process with `keyshift` unimportable, decrypts a platform-key environment (SQLite
and PostgreSQL), a local-vault CMK environment, a legacy BYOK environment (everything in the SQL
layout) and, in test_reference_external.py, CMKs in SoftHSM2, PyKMIP and moto's KMS. Its output is
compared with what the SDK reads and, byte for byte, with `keyshift env export`. Tampered,
truncated, reordered or moved data is refused with exit 8 and no output directory.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keyshift.features.export import export_environment
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.files import FileStore
from keyshift.stores.records import RecordStore
from migrate.helpers import byok_world, customer_key, fill, make_env, make_policy, make_tenant, run
from reference.helpers import assert_matches_sdk, decrypt, tree

BIG = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: two segments of the default size


def _write_sample(rt: Runtime, env_id: str) -> None:
    records = RecordStore(rt, env_id)
    records.put_many("accounts", [(f"a{i:03d}", {"name": f"Fabrikam {i}", "n": i / 3}) for i in range(25)])
    records.put("accounts", "a001", {"name": "renamed", "tags": ["x", "y"]})  # version 2
    records.put("blobs", "b1", b"\x00\x01raw bytes\xff")
    for rid in ("Zed", "zed", "_u", "a.b", "A-1", "~x", "1@2"):  # ids whose order differs by collation
        records.put("unicode", rid, {"text": "caf\u00e9 \u2615 \U0001f600", "id": rid})
    log = AuditLog(rt, env_id)
    for i in range(12):
        log.append({"action": "login", "i": i})
    files = FileStore(rt, env_id)
    files.put("img/logo.png", BIG)
    files.put("docs/deep/nested/readme.txt", b"hello")
    files.put("empty.bin", b"")


def _decrypt_and_compare(rt: Runtime, home: Path, env_id: str, tmp: Path, db_url: str | None = None) -> None:
    out = tmp / "plain"
    result = decrypt(home, env_id, out, db_url=db_url)
    assert result.returncode == 0, result.stderr
    manifest = assert_matches_sdk(rt, env_id, out)
    assert manifest["records"] and manifest["audit_events"] and manifest["files"]
    exported = tmp / "exported"
    export_environment(rt, env_id, exported)
    assert tree(out) == tree(exported)  # the customer's exit path and `env export` agree byte for byte


def test_platform_key_environment(rt: Runtime, home: Path, db_url: str | None, tmp_path: Path) -> None:
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "contoso-prod")
    _write_sample(rt, env_id)
    other = make_env(rt, "contoso", "contoso-dev")  # another environment's data is not exported
    RecordStore(rt, other).put("accounts", "a000", {"name": "other"})
    _decrypt_and_compare(rt, home, env_id, tmp_path, db_url)


def test_local_vault_cmk_environment(sqlite_rt: Runtime, tmp_path: Path) -> None:
    rt = sqlite_rt
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "contoso-prod")
    _write_sample(rt, env_id)
    vault, key = customer_key(rt, "contoso-kv", "cmk", 3072)
    make_policy(rt, "contoso", "contoso-pol", vault, key)
    assert run(rt, start_link(rt, "contoso-pol", "contoso-prod")["id"]) == "succeeded"
    RecordStore(rt, env_id).put("accounts", "after-link", {"n": 1})
    _decrypt_and_compare(rt, rt.settings.home_path(), env_id, tmp_path)


def test_directory_store_paths_that_look_escaped_or_temporary(sqlite_rt: Runtime, tmp_path: Path) -> None:
    """Layout 2 of the directory store: `coll.ksf/y` lives under the directory `coll.ksf~` (beside
    the file of `coll`), a user file may be named `.tmp-…`; each is exported under its own path."""
    rt = sqlite_rt
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "contoso-prod")
    _write_sample(rt, env_id)
    files = FileStore(rt, env_id)
    wanted = {"coll": b"the file coll", "coll.ksf/y": b"under coll.ksf", ".tmp-x.part": b"a user's file"}
    wanted["coll.ksf~/z"] = b"under coll.ksf~"
    for path, data in wanted.items():
        files.put(path, data)
    base = rt.settings.home_path() / "files" / env_id
    assert (base / "coll.ksf").is_file() and (base / "coll.ksf~" / "y.ksf").is_file()
    assert (base / "coll.ksf~~" / "z.ksf").is_file() and (base / ".tmp-x.part.ksf").is_file()
    _decrypt_and_compare(rt, rt.settings.home_path(), env_id, tmp_path)
    out = tree(tmp_path / "plain")
    for path, data in wanted.items():
        assert out[f"files/{path}"] == data


def test_byok_environment_in_the_sql_layout(sqlite_rt: Runtime, tmp_path: Path) -> None:
    rt = sqlite_rt
    world = byok_world(rt, tmp_path)
    env_id = world["envs"]["fab-prod"]
    fill(rt, env_id, rows=30, events=8, files=3)
    FileStore(rt, env_id).put("big.bin", BIG)  # several 1 MiB chunk rows
    _decrypt_and_compare(rt, rt.settings.home_path(), env_id, tmp_path)


def test_byok_environment_migrated_to_a_cmk(sqlite_rt: Runtime, tmp_path: Path) -> None:
    """After BYOK -> CMK the audit log and files live outside SQL; the retained SQL copies are not read."""
    from keyshift.control import tenants

    rt = sqlite_rt
    world = byok_world(rt, tmp_path)
    env_id = world["envs"]["fab-prod"]
    fill(rt, env_id, rows=20, events=6, files=2)
    vault, key = customer_key(rt, "fab-kv", "cmk", 2048)
    make_policy(rt, "fabrikam", "fab-pol", vault, key)
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-1")
    assert run(rt, start_link(rt, "fab-pol", "fab-prod")["id"]) == "succeeded"
    AuditLog(rt, env_id).append({"after": "migration"})
    _decrypt_and_compare(rt, rt.settings.home_path(), env_id, tmp_path)


# -- refusals ------------------------------------------------------------------------------------------


@pytest.fixture
def sample(sqlite_rt: Runtime) -> dict[str, Any]:
    rt = sqlite_rt
    make_tenant(rt, "contoso")
    env_id = make_env(rt, "contoso", "contoso-prod")
    other = make_env(rt, "contoso", "contoso-dev")
    _write_sample(rt, env_id)
    RecordStore(rt, other).put("accounts", "a900", {"name": "dev"})
    home = rt.settings.home_path()
    return {"rt": rt, "home": home, "env": env_id, "other": other, "db": home / "state.db"}


def _sql(db: Path, statement: str, *params: Any) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute(statement, params).rowcount >= 1


def _flip_record(s: dict[str, Any]) -> str:
    with sqlite3.connect(s["db"]) as conn:
        (blob,) = conn.execute(
            "SELECT value FROM data_records WHERE environment_id = ? AND record_id = 'a005'", (s["env"],)
        ).fetchone()
    bad = bytearray(blob)
    bad[40] ^= 0x01
    _sql(s["db"], "UPDATE data_records SET value = ? WHERE record_id = 'a005'", bytes(bad))
    return "record accounts/a005"


def _swap_records(s: dict[str, Any]) -> str:
    with sqlite3.connect(s["db"]) as conn:
        rows = dict(
            conn.execute(
                "SELECT record_id, value FROM data_records "
                "WHERE environment_id = ? AND record_id IN ('a002', 'a003')",
                (s["env"],),
            ).fetchall()
        )
        conn.execute("UPDATE data_records SET value = ? WHERE record_id = 'a002'", (rows["a003"],))
        conn.execute("UPDATE data_records SET value = ? WHERE record_id = 'a003'", (rows["a002"],))
    return "record accounts/a002"


def _move_row_to_other_env(s: dict[str, Any]) -> str:
    _sql(
        s["db"],
        "UPDATE data_records SET environment_id = ? WHERE environment_id = ? AND record_id = 'a007'",
        s["other"],
        s["env"],
    )
    s["env"] = s["other"]  # decrypt the environment the row was moved into
    return "record accounts/a007"


def _truncate_file(s: dict[str, Any]) -> str:
    path = s["home"] / "files" / s["env"] / "img" / "logo.png.ksf"
    data = path.read_bytes()
    path.write_bytes(data[: 63 + (1 << 20) + 16])  # drop the last segment: a clean cut
    return "file 'img/logo.png'"


def _move_file(s: dict[str, Any]) -> str:
    base = s["home"] / "files" / s["env"]
    os.replace(base / "docs" / "deep" / "nested" / "readme.txt.ksf", base / "moved.txt.ksf")
    return "file 'moved.txt'"


def _reorder_segments(s: dict[str, Any]) -> str:
    path = s["home"] / "files" / s["env"] / "img" / "logo.png.ksf"
    data = path.read_bytes()
    head, seg = data[:63], (1 << 20) + 16
    first, second = data[63 : 63 + seg], data[63 + seg :]
    path.write_bytes(head + second + first)
    return "file 'img/logo.png'"


def _edit_event_time(s: dict[str, Any]) -> str:
    with sqlite3.connect(s["home"] / "audit.db") as conn:
        (eid,) = conn.execute("SELECT event_id FROM audit_events ORDER BY seq LIMIT 1").fetchone()
        conn.execute("UPDATE audit_events SET at = '2020-01-01 00:00:00.000000' WHERE event_id = ?", (eid,))
    return f"audit event {eid}"


def _swap_event_ids(s: dict[str, Any]) -> str:
    with sqlite3.connect(s["home"] / "audit.db") as conn:
        (a, b) = [r[0] for r in conn.execute("SELECT event_id FROM audit_events ORDER BY seq LIMIT 2")]
        conn.execute("UPDATE audit_events SET event_id = 'tmp' WHERE event_id = ?", (a,))
        conn.execute("UPDATE audit_events SET event_id = ? WHERE event_id = ?", (a, b))
        conn.execute("UPDATE audit_events SET event_id = ? WHERE event_id = 'tmp'", (b,))
    return "audit event"


TAMPERS = {
    "flip a byte of a record": _flip_record,
    "swap two rows' ciphertexts": _swap_records,
    "move a row to another environment": _move_row_to_other_env,
    "truncate a file at a segment boundary": _truncate_file,
    "move a file to another path": _move_file,
    "reorder a file's segments": _reorder_segments,
    "change an audit event's time": _edit_event_time,
    "swap two audit events": _swap_event_ids,
}


@pytest.mark.parametrize("tamper", list(TAMPERS), ids=list(TAMPERS))
def test_tampered_data_is_refused_with_no_output(sample: dict[str, Any], tmp_path: Path, tamper: str) -> None:
    what = TAMPERS[tamper](sample)
    out = tmp_path / "out" / "plain"
    result = decrypt(sample["home"], sample["env"], out)
    assert result.returncode == 8, (result.returncode, result.stderr)
    assert what in result.stderr and "failed authentication" in result.stderr
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []  # no partial or temp directory
    assert result.stdout == ""


def test_untampered_sample_decrypts(sample: dict[str, Any], tmp_path: Path) -> None:
    """The control for the tamper cases: the same sample, untouched, decrypts completely."""
    result = decrypt(sample["home"], sample["env"], tmp_path / "plain")
    assert result.returncode == 0, result.stderr
    assert_matches_sdk(sample["rt"], sample["env"], tmp_path / "plain")


def test_refusals_before_anything_is_written(sample: dict[str, Any], tmp_path: Path) -> None:
    home = sample["home"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = decrypt(home, sample["env"], busy)
    assert result.returncode == 4 and "not an empty directory" in result.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    result = decrypt(home, "no-such-env", tmp_path / "x")
    assert result.returncode == 3 and "not found" in result.stderr and not (tmp_path / "x").exists()
    # A wrong master key is reported as such, not turned into garbage keys.
    key = home / "master.key"
    original = key.read_bytes()
    key.write_bytes(bytes(32))
    try:
        result = decrypt(home, sample["env"], tmp_path / "y")
    finally:
        key.write_bytes(original)
    assert result.returncode == 6 and "key-check" in result.stderr and not (tmp_path / "y").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert decrypt(home, sample["env"], empty).returncode == 0  # an empty directory is fine
    assert (empty / "manifest.json").exists()
