"""Moves and paths: paths that collided in the old directory mapping move out of SQL and back; a
file the destination cannot hold stops the migration BEFORE its point of no return, with a typed
error, leaving `job cancel` usable and the environment as it was."""

from __future__ import annotations

from pathlib import Path

from keyshift.control import tenants
from keyshift.jobs import store
from keyshift.migrate.link import start_link
from keyshift.migrate.restore import start_restore
from keyshift.runtime import Runtime
from keyshift.stores.envstate import env_states
from keyshift.stores.file_backends import SqlFiles
from keyshift.stores.files import FileStore
from keyshift.stores.keys import data_keys

from .helpers import byok_world, customer_key, env_row, job, make_policy, run

PATHS = {
    "coll": b"the file coll",
    "coll.ksf/y": b"a file under coll.ksf",
    "coll.ksf~/z": b"and under coll.ksf~",
    ".tmp-0123456789abcdef.part": b"named like a temp file",
}


def _world(rt: Runtime, tmp_path: Path, name: str) -> str:
    w = byok_world(rt, tmp_path, envs=(name,))
    vault, key = customer_key(rt, f"{name}-kv", f"{name}-cmk")
    make_policy(rt, w["tenant"], f"{name}-pol", vault, key)
    return str(w["envs"][name])


def test_paths_that_collided_move_to_file_storage_and_back(rt: Runtime, tmp_path: Path) -> None:
    env_id = _world(rt, tmp_path, "mp-coll")
    fs = FileStore(rt, env_id)
    for p, body in PATHS.items():
        fs.put(p, body)
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-5")
    view = start_link(rt, "mp-coll-pol", "mp-coll")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    assert env_row(rt, env_id).stores["files"] == "file_storage"
    assert {i["path"]: fs.get(i["path"]) for i in fs.list("")} == PATHS
    view = start_restore(rt, "mp-coll")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    data_keys(rt).flush()
    assert env_row(rt, env_id).stores["files"] == "sql"
    assert {i["path"]: fs.get(i["path"]) for i in fs.list("")} == PATHS


def _stored_unchecked(rt: Runtime, env_id: str, path: str, body: bytes) -> None:
    """A file stored under a path today's API refuses (as an older release could have)."""
    from keyshift.crypto.records import AssociatedData
    from keyshift.crypto.stream import encrypt_stream

    env = env_states(rt).get(env_id)
    key = data_keys(rt).reserve(rt, env, "files", 1)
    ad = AssociatedData(env.tenant_id, env.id, "files", "files", path).encode()
    import io

    SqlFiles(rt).write(
        env_id, path, lambda sink: encrypt_stream(key, io.BytesIO(body), sink, ad), key.id.hex()
    )


def test_unmovable_path_fails_before_the_point_of_no_return_and_cancel_works(
    rt: Runtime, tmp_path: Path
) -> None:
    env_id = _world(rt, tmp_path, "mp-bad")
    fs = FileStore(rt, env_id)
    fs.put("good/file", b"fine")
    _stored_unchecked(rt, env_id, "bad//double-slash", b"old")
    tenants.byok_flag_remove(rt, "fabrikam", ticket="SR-6")
    before = env_row(rt, env_id)
    view = start_link(rt, "mp-bad-pol", "mp-bad")
    assert run(rt, view["id"]) == "failed"
    j = job(rt, view["id"])
    assert j["error"]["code"] == "unmovable_file_paths", j
    assert "bad//double-slash" in j["error"]["message"]
    after = env_row(rt, env_id)
    assert (after.enc_mode, after.stores, after.policy_id) == (
        before.enc_mode,
        before.stores,
        before.policy_id,
    )
    assert fs.get("good/file") == b"fine"
    assert store.request_cancel(rt, view["id"])["state"] == "cancelled"
    # the way forward: remove the file, then the migration runs
    SqlFiles(rt).delete(env_id, "bad//double-slash")
    view = start_link(rt, "mp-bad-pol", "mp-bad")
    assert run(rt, view["id"]) == "succeeded", job(rt, view["id"])
    assert fs.get("good/file") == b"fine"
