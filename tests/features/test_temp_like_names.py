"""Files named like the directory store's temp files (`.tmp-…`) and paths that collided in the old
mapping are ordinary files for backups, restores and `env copy`: none is skipped."""

from __future__ import annotations

import keyshift.features  # noqa: F401
from features.helpers import make_env
from keyshift.features import backups, restore
from keyshift.runtime import Runtime
from keyshift.stores.files import FileStore

FILES = {
    ".tmp-0123456789abcdef.part": b"named like a temp file",
    "dir/.tmp-a1b2c3d4e5f60718.part": b"deeper",
    ".tmp-x": b"short",
    "coll": b"coll",
    "coll.ksf/y": b"under coll.ksf",
}


def test_backup_restore_and_copy_keep_temp_like_and_colliding_names(rt: Runtime) -> None:
    env = make_env(rt, "contoso-prod")
    dev = make_env(rt, "contoso-dev")
    fs = FileStore(rt, env)
    for p, body in FILES.items():
        fs.put(p, body)
    b = backups.create_backup(rt, "contoso-prod")
    assert b["counts"]["files"] == len(FILES)
    for p in FILES:
        fs.delete(p)
    restore.restore_backup(rt, "contoso-prod", b["id"])
    assert {i["path"]: fs.get(i["path"]) for i in fs.list()} == FILES
    restore.copy_environment(rt, "contoso-prod", "contoso-dev")
    dst = FileStore(rt, dev)
    assert {i["path"]: dst.get(i["path"]) for i in dst.list()} == FILES
