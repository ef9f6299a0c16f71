"""Files: directory file storage, the SQL layout, streaming with constant memory, atomic writes,
path validation, tampering and truncation, the transition union."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from keyshift.errors import ConflictError, IntegrityError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores import files as files_mod
from keyshift.stores.envstate import env_states
from keyshift.stores.files import FileStore
from stores.helpers import Pattern, make_env, set_env, snapshot

SQL = {"records": "sql", "audit": "sql", "files": "sql"}
FS = {"records": "sql", "audit": "document", "files": "file_storage"}


def _files_dir(rt: Runtime) -> Path:
    return rt.settings.home_path() / "files"


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("layout", ["fs", "sql"])
def test_put_get_open_list_delete(rt: Runtime, layout: str) -> None:
    fs = FileStore(rt, make_env(rt, stores=FS if layout == "fs" else SQL))
    fs.put("img/logo.png", b"\x89PNG secret-logo-bytes")
    fs.put("docs/a.txt", io.BytesIO(b"hello " * 1000))
    fs.put("empty", b"")
    assert fs.get("img/logo.png") == b"\x89PNG secret-logo-bytes"
    with fs.open("docs/a.txt") as f:
        assert f.read(6) == b"hello "
        assert f.read() == b"hello " * 999
    assert fs.get("empty") == b""
    assert fs.list() == [
        {"path": "docs/a.txt", "size": 6000},
        {"path": "empty", "size": 0},
        {"path": "img/logo.png", "size": 22},
    ]
    assert [i["path"] for i in fs.list("img/")] == ["img/logo.png"]
    fs.put("img/logo.png", b"v2")  # replace
    assert fs.get("img/logo.png") == b"v2"
    fs.delete("img/logo.png")
    with pytest.raises(NotFoundError):
        fs.get("img/logo.png")
    with pytest.raises(NotFoundError):
        fs.delete("img/logo.png")
    if layout == "fs":
        blobs = b"".join(p.read_bytes() for p in (_files_dir(rt) / fs.env_id).rglob("*.ksf"))
    else:
        blobs = repr(snapshot(rt, "data_file_chunks")).encode()
        assert _all_files(_files_dir(rt) / fs.env_id) == []
    assert b"hello" not in blobs and b"secret-logo" not in blobs


def test_directory_write_is_atomic_and_leaves_no_temp_file(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    fs = FileStore(rt, make_env(rt))
    fs.put("a/b.bin", b"old contents")
    root = _files_dir(rt) / fs.env_id
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    class Exploding(io.RawIOBase):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            self.n += 1
            if self.n > 3:
                raise OSError("source went away")
            memoryview(b).cast("B")[: 1 << 16] = b"x" * (1 << 16)
            return 1 << 16

    with pytest.raises(OSError):
        fs.put("a/b.bin", Exploding())
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # the old file intact, no temp or partial file left behind
    assert fs.get("a/b.bin") == b"old contents"
    for p in root.rglob("*.ksf"):
        assert p.stat().st_mode & 0o077 == 0


def _peaks(fs: FileStore, path: str, size: int) -> tuple[int, int]:
    """Peak traced memory of putting, then streaming back, a `size`-byte file; checks content."""
    src = Pattern(size, seed=path.encode())
    tracemalloc.start()
    try:
        fs.put(path, src)
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        total = 0
        with fs.open(path) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                total += len(chunk)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size and digest.hexdigest() == src.digest.hexdigest()
    return put_peak, get_peak


@pytest.mark.parametrize("layout", ["fs", "sql"])
def test_large_file_streams_with_constant_memory(sqlite_rt: Runtime, layout: str) -> None:
    rt = sqlite_rt
    fs = FileStore(rt, make_env(rt, stores=FS if layout == "fs" else SQL))
    small = _peaks(fs, "small.bin", 6 << 20)
    big = _peaks(fs, "big.bin", 48 << 20)  # 8x larger, far beyond the 1 MiB segment and read buffers
    for s_peak, b_peak in zip(small, big, strict=True):
        assert b_peak < 12 << 20, big  # a few segments' worth, whatever the size
        assert b_peak - s_peak < 2 << 20, (small, big)  # flat: does not grow with the file


def test_sql_layout_refuses_files_over_128_mib(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FileStore(rt, make_env(rt, stores=SQL))
    fs.put("keep", b"k")
    before = snapshot(rt, "data_files", "data_file_chunks")
    assert files_mod.SQL_MAX_FILE == 128 << 20
    monkeypatch.setattr(files_mod, "SQL_MAX_FILE", 3 << 20)  # the same code path, smaller numbers
    with pytest.raises(ConflictError) as err:
        fs.put("huge", Pattern((3 << 20) + 1))  # streamed, size unknown: refused once past the cap
    assert err.value.code == "file_too_large_for_sql"
    assert snapshot(rt, "data_files", "data_file_chunks") == before
    fs.put("exactly", Pattern(3 << 20))
    before = snapshot(rt, "data_files", "data_file_chunks")
    with pytest.raises(ConflictError) as err:
        fs.put("huge", b"x" * ((3 << 20) + 1))  # known size: refused before anything is read
    assert err.value.code == "file_too_large_for_sql"
    assert snapshot(rt, "data_files", "data_file_chunks") == before


BAD_PATHS = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a\x00b",
    "a\\..\\b",
    "C:/x",
    "a//b",
    "a/./b",
    "a/",
    "",
    "x" * 1025,
    "a/" + "y" * 201,
    "a\nb",
]


def test_escaping_paths_are_refused_and_nothing_is_touched(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    fs = FileStore(rt, make_env(rt))
    fs.put("keep.txt", b"k")
    before = _all_files(rt.settings.home_path())
    for path in BAD_PATHS:
        calls: list[Any] = [fs.get, fs.delete, fs.open, lambda p: fs.put(p, b"data")]
        if path not in ("", "a/"):  # those two are valid list prefixes
            calls.append(fs.list)
        for call in calls:
            with pytest.raises(UsageError) as err:
                call(path)
            assert err.value.code == "invalid_path", path
    assert _all_files(rt.settings.home_path()) == before
    assert fs.get("keep.txt") == b"k"


def test_truncated_file_on_disk_is_an_integrity_error_naming_the_path(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    fs = FileStore(rt, make_env(rt))
    fs.put("docs/report.pdf", Pattern(3 << 20))
    fs.put("docs/other.pdf", b"fine")
    [target] = list((_files_dir(rt) / fs.env_id).rglob("report.pdf.ksf"))
    size = target.stat().st_size
    for cut in (size - 1, (1 << 20) + 16 + 63, 40):  # mid-segment, at a segment boundary, in the header
        with open(target, "r+b") as f:
            f.truncate(cut)
        with pytest.raises(IntegrityError) as err:
            fs.get("docs/report.pdf")
        assert "docs/report.pdf" in err.value.message
    assert fs.get("docs/other.pdf") == b"fine"


@pytest.mark.parametrize("layout", ["fs", "sql"])
def test_tampered_or_moved_ciphertext_is_detected(rt: Runtime, layout: str) -> None:
    fs = FileStore(rt, make_env(rt, stores=FS if layout == "fs" else SQL))
    fs.put("a.bin", b"A" * 5000)
    fs.put("b.bin", b"B" * 5000)
    if layout == "fs":
        root = _files_dir(rt) / fs.env_id
        [a] = list(root.rglob("a.bin.ksf"))
        [b] = list(root.rglob("b.bin.ksf"))
        os.replace(a, b)  # a's ciphertext now sits at path b
        with pytest.raises(IntegrityError) as err:
            fs.get("b.bin")
        assert "b.bin" in err.value.message
    else:
        from sqlalchemy import select, update

        from keyshift.db.models import DataFile, DataFileChunk

        with rt.transaction() as s:
            fid = s.scalars(
                select(DataFile.file_id).where(DataFile.path == "a.bin", DataFile.environment_id == fs.env_id)
            ).one()
            data = s.scalars(select(DataFileChunk.data).where(DataFileChunk.file_id == fid)).one()
            flipped = data[:100] + bytes([data[100] ^ 1]) + data[101:]
            s.execute(update(DataFileChunk).where(DataFileChunk.file_id == fid).values(data=flipped))
        with pytest.raises(IntegrityError) as err:
            fs.get("a.bin")
        assert "a.bin" in err.value.message
        assert fs.get("b.bin") == b"B" * 5000


def test_transition_reads_and_lists_the_union(rt: Runtime) -> None:
    env_id = make_env(rt, stores=SQL)
    fs = FileStore(rt, env_id)
    fs.put("old/1.txt", b"one")
    fs.put("old/2.txt", b"two")
    set_env(rt, env_id, stores={**SQL, "files": "file_storage", "files_from": "sql"})
    env_states(rt).invalidate(env_id)
    fs.put("old/2.txt", b"two, moved")  # written to the new store, shadowing the legacy copy
    fs.put("new.txt", b"new")
    assert fs.get("old/1.txt") == b"one"  # still in SQL
    assert fs.get("old/2.txt") == b"two, moved"
    assert fs.list() == [
        {"path": "new.txt", "size": 3},
        {"path": "old/1.txt", "size": 3},
        {"path": "old/2.txt", "size": 10},
    ]
    fs.delete("old/2.txt")  # gone from both stores, so the legacy copy cannot resurface
    with pytest.raises(NotFoundError):
        fs.get("old/2.txt")
