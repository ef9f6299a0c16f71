"""File paths map injectively onto every store; temp files never share the user's namespace.

* `coll` and `coll.ksf/y` (and `.tmp-…` names) are ordinary paths in every layout;
* a home written with the old directory mapping is upgraded in place (crash-safe) and stays readable;
* temp files orphaned by a killed writer are removed by maintenance once old, fresh ones kept;
* on S3, a path too long for an object key is refused at write time with a typed error.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from keyshift.errors import UsageError
from keyshift.runtime import Runtime
from keyshift.stores import file_dir
from keyshift.stores.file_backends import backend
from keyshift.stores.files import FileStore
from stores.helpers import make_env
from stores.test_files_s3 import s3  # noqa: F401 - fixture (moto server)

SQL = {"records": "sql", "audit": "sql", "files": "sql"}
FS = {"records": "sql", "audit": "document", "files": "file_storage"}
TRICKY = [
    "coll",
    "coll.ksf/y",
    "coll.ksf~/z",
    "coll.ksf~~",
    "d/e.ksf",
    "d/e.ksf/f",
    ".tmp-0123456789abcdef.part",
    "x/.tmp-abc",
    ".tmp/inside",
    ".layout",
]


@pytest.mark.parametrize("layout", ["fs", "sql"])
def test_colliding_and_temp_like_paths_are_distinct_files_in_every_layout(rt: Runtime, layout: str) -> None:
    fs = FileStore(rt, make_env(rt, stores=FS if layout == "fs" else SQL))
    for i, path in enumerate(TRICKY):
        fs.put(path, f"body {i} of {path}".encode())
    assert [i["path"] for i in fs.list("")] == sorted(TRICKY)
    for i, path in enumerate(TRICKY):
        assert fs.get(path) == f"body {i} of {path}".encode()
    fs.delete("coll")
    assert fs.get("coll.ksf/y") == b"body 1 of coll.ksf/y"
    assert "coll" not in [i["path"] for i in fs.list("")]


def test_directory_layout_never_names_a_directory_like_a_file(rt: Runtime) -> None:
    env_id = make_env(rt, stores=FS)
    FileStore(rt, env_id).put("a.ksf/b.ksf/c", b"x")
    root = rt.settings.home_path() / "files" / env_id
    assert (root / "a.ksf~" / "b.ksf~" / "c.ksf").is_file()
    for dirpath, dirs, _files in os.walk(root):
        assert not [d for d in dirs if d.endswith(".ksf")], dirpath


def _legacy_tree(root: Path, rt: Runtime, env_id: str, paths: dict[str, bytes]) -> None:
    """Write with today's store, then rename directories back to the layout-1 names."""
    fs = FileStore(rt, env_id)
    for p, body in paths.items():
        fs.put(p, body)
    for dirpath, dirs, _files in os.walk(root / env_id, topdown=False):
        for d in sorted(dirs, key=len):
            if file_dir.segment_of_dir(d) != d:
                os.rename(Path(dirpath, d), Path(dirpath, file_dir.segment_of_dir(d)))
    (root / file_dir.MARKER).unlink()
    file_dir._ready.discard(str(root))


def test_a_layout_1_home_is_upgraded_and_readable(rt: Runtime) -> None:
    env_id = make_env(rt, stores=FS)
    root = rt.settings.home_path() / "files"
    paths = {"a.ksf/b": b"one", "a.ksf~/c": b"two", "q.ksf/r.ksf~/s": b"three", "plain/t": b"four"}
    _legacy_tree(root, rt, env_id, paths)
    assert (root / env_id / "a.ksf").is_dir() and (root / env_id / "a.ksf~").is_dir()
    fs = FileStore(rt, env_id)
    assert {i["path"]: fs.get(i["path"]) for i in fs.list("")} == paths  # first use upgrades
    assert (root / file_dir.MARKER).read_text().strip() == file_dir.LAYOUT
    assert not (root / env_id / "a.ksf").exists()


def test_layout_upgrade_resumes_after_a_crash_without_renaming_twice(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_id = make_env(rt, stores=FS)
    root = rt.settings.home_path() / "files"
    paths = {"a.ksf/b": b"one", "a.ksf~/c": b"two", "m.ksf/n": b"three"}
    _legacy_tree(root, rt, env_id, paths)
    real_rename, calls = os.rename, {"n": 0}

    def crashing_rename(src: Any, dst: Any) -> None:
        calls["n"] += 1
        real_rename(src, dst)
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed after the 2nd rename, before its progress was written")

    monkeypatch.setattr(file_dir.os, "rename", crashing_rename)
    with pytest.raises(KeyboardInterrupt):
        file_dir.ensure_layout(root)
    monkeypatch.setattr(file_dir.os, "rename", real_rename)
    assert not (root / file_dir.MARKER).exists()
    fs = FileStore(rt, env_id)
    assert {i["path"]: fs.get(i["path"]) for i in fs.list("")} == paths


def test_writes_leave_no_temp_file_in_the_user_namespace(rt: Runtime) -> None:
    env_id = make_env(rt, stores=FS)
    fs = FileStore(rt, env_id)
    fs.put("a/b", b"x" * 5000)
    fs.put("a/b", b"y" * 5000)
    under_env = [p.name for p in (rt.settings.home_path() / "files" / env_id).rglob("*") if p.is_file()]
    assert under_env == ["b.ksf"]


def test_maintenance_removes_old_orphaned_temp_files_only(rt: Runtime) -> None:
    from keyshift.jobs.schedule import run_due

    env_id = make_env(rt, stores=FS)
    fs = FileStore(rt, env_id)
    fs.put("keep/me", b"data")
    root = rt.settings.home_path() / "files"
    old = time.time() - file_dir.TEMP_MAX_AGE - 60
    orphan = root / file_dir.TMP_DIR / "deadbeef.part"
    orphan.write_bytes(b"ciphertext of a killed writer")
    os.utime(orphan, (old, old))
    fresh = root / file_dir.TMP_DIR / "cafebabe.part"
    fresh.write_bytes(b"a writer still at work")
    legacy = root / env_id / "keep" / ".tmp-0123456789abcdef.part"  # left by a layout-1 writer
    legacy.write_bytes(b"old orphan")
    os.utime(legacy, (old, old))
    out = run_due(rt, only=("temp_files",))["temp_files"]
    assert out == {"removed": 2, "recent_kept": 1}
    assert not orphan.exists() and not legacy.exists() and fresh.exists()
    assert fs.get("keep/me") == b"data"


def test_s3_refuses_a_path_too_long_for_an_object_key_in_every_layout(
    s3: tuple[Runtime, Any, str],  # noqa: F811 - the fixture
) -> None:
    rt, client, bucket = s3
    long_path = "/".join(["s" * 199] * 5)  # 999 bytes: valid, but prefix/env/path > 1,024
    for stores in (FS, SQL):
        fs = FileStore(rt, make_env(rt, stores=stores))
        with pytest.raises(UsageError) as exc:
            fs.put(long_path, b"x")
        assert exc.value.code == "invalid_path"
        assert fs.list("") == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    ok = "/".join(["s" * 190] * 4)
    fs = FileStore(rt, make_env(rt, stores=FS))
    fs.put(ok, b"fits")
    assert fs.get(ok) == b"fits"
    big = os.urandom((1 << 20) * 2 + 17)
    fs.put("sized", big)
    reader, size = fs.open_sized("sized")
    with reader:
        assert size == len(big) and reader.read() == big


@pytest.mark.parametrize("layout", ["fs", "sql"])
def test_open_sized_knows_the_exact_plaintext_size_before_reading(rt: Runtime, layout: str) -> None:
    fs = FileStore(rt, make_env(rt, stores=FS if layout == "fs" else SQL))
    for n in (0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 5):
        body = os.urandom(n)
        fs.put("f", body)
        reader, size = fs.open_sized("f")
        with reader:
            assert size == n and reader.read() == body


def test_s3_maintenance_aborts_stale_multipart_uploads(s3: tuple[Runtime, Any, str]) -> None:  # noqa: F811
    rt, client, bucket = s3
    b = backend(rt, "file_storage")
    up = client.create_multipart_upload(Bucket=bucket, Key="tenant-files/env_x/killed")["UploadId"]
    # moto reports every upload as initiated on 2010-11-10, so "recent" here means within 30 years
    assert b.clean_temp(max_age=30 * 365 * 86400) == {"removed": 0, "recent_kept": 1}  # type: ignore[attr-defined]
    assert b.clean_temp() == {"removed": 1, "recent_kept": 0}  # type: ignore[attr-defined]
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert up not in [u["UploadId"] for u in left]


def test_concurrent_first_writes_of_one_path_in_the_sql_layout_all_succeed(rt: Runtime) -> None:
    import threading

    env_id = make_env(rt, stores=SQL)
    errors: list[str] = []
    bodies = [f"writer {i} ".encode() * 500 for i in range(6)]

    def put(body: bytes) -> None:
        try:
            FileStore(rt, env_id).put("race/x", body)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    for _round in range(3):
        path_threads = [threading.Thread(target=put, args=(b,)) for b in bodies]
        for t in path_threads:
            t.start()
        for t in path_threads:
            t.join()
        assert not errors, errors
        assert FileStore(rt, env_id).get("race/x") in bodies
        FileStore(rt, env_id).delete("race/x")


def test_sql_file_replaced_while_read_is_a_clear_conflict_not_corruption(rt: Runtime) -> None:
    from keyshift.errors import ConflictError

    fs = FileStore(rt, make_env(rt, stores=SQL))
    first = os.urandom(3 * (1 << 20))
    fs.put("big", first)
    with fs.open("big") as reader:
        assert reader.read(100) == first[:100]
        fs.put("big", b"replaced meanwhile")
        with pytest.raises(ConflictError) as exc:
            reader.read()
    assert exc.value.code == "file_changed_during_read"
    assert fs.get("big") == b"replaced meanwhile"
