"""A file move reads each source file once: whether a path is in a store is asked without opening
it (SQL: the path row only, not its first chunk; directory: a stat; S3: HEAD, not GET)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyshift.control import tenants
from keyshift.migrate.link import start_link
from keyshift.runtime import Runtime
from keyshift.stores import file_backends
from keyshift.stores.file_dir import DirectoryFiles
from keyshift.stores.files import FileStore

from .helpers import byok_world, customer_key, fill, make_policy, read_all, run


def test_a_link_opens_each_sql_file_once_and_no_destination_file(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = byok_world(rt, tmp_path, envs=("reads",))
    env_id = w["envs"]["reads"]
    data = fill(rt, env_id, rows=2, events=3, files=6)
    vault, key = customer_key(rt, "reads-kv", "reads-cmk")
    make_policy(rt, w["tenant"], "reads-pol", vault, key)
    tenants.byok_flag_remove(rt, w["tenant"], ticket="SR-2")
    opens = {"sql": 0, "dir": 0}
    sql_open, dir_open = file_backends.SqlFiles.open, DirectoryFiles.open

    def count_sql(self: file_backends.SqlFiles, env: str, path: str) -> object:
        opens["sql"] += 1
        return sql_open(self, env, path)

    def count_dir(self: DirectoryFiles, env: str, path: str) -> object:
        opens["dir"] += 1
        return dir_open(self, env, path)

    monkeypatch.setattr(file_backends.SqlFiles, "open", count_sql)
    monkeypatch.setattr(DirectoryFiles, "open", count_dir)
    view = start_link(rt, "reads-pol", "reads")
    assert run(rt, view["id"]) == "succeeded"
    assert opens == {"sql": 6, "dir": 0}  # one read of each source file, nothing else opened
    monkeypatch.undo()
    assert read_all(rt, env_id)["files"] == data["files"]


def test_exists_of_the_sql_and_directory_stores(rt: Runtime, tmp_path: Path) -> None:
    w = byok_world(rt, tmp_path, envs=("ex",))
    env_id = w["envs"]["ex"]
    FileStore(rt, env_id).put("a/b.bin", b"x" * 10)
    sql = file_backends.SqlFiles(rt)
    assert sql.exists(env_id, "a/b.bin")
    assert not sql.exists(env_id, "a/c.bin") and not sql.exists(env_id, "a")
    assert not sql.exists("env_other", "a/b.bin")
    d = DirectoryFiles(tmp_path / "files")
    d.write(env_id, "x/y.ksf/z", lambda sink: sink.write(b"ct") or 2, "00" * 16)
    assert d.exists(env_id, "x/y.ksf/z")
    assert not d.exists(env_id, "x/y.ksf") and not d.exists(env_id, "x") and not d.exists(env_id, "x/q")
