"""Copying files between the SQL layout and file storage for moves (link) and returns (restore).

Each file is streamed: decrypted segment by segment from the source backend and re-encrypted
under the environment's primary "files" DEK into the destination — constant memory, no plaintext
temp file. A copy never replaces a newer client write:
* forward (SQL -> file storage): put-if-absent. On the directory backend the ciphertext goes to a
  temp file in the target directory and is hard-linked into place (fails if a client wrote the
  path meanwhile; our copy is then discarded). Other backends check, then write (a tiny window).
* backward (file storage -> SQL): the SQL row is replaced only if it is still the one recorded at
  the restore's cutover (`sql_files_at_cut`), i.e. no client wrote the path during the restore.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from typing import Any

from sqlalchemy import select

from keyshift.crypto.records import AssociatedData
from keyshift.crypto.stream import DecryptingReader, encrypt_stream
from keyshift.db.models import DataFile
from keyshift.errors import IntegrityError
from keyshift.jobs.context import BatchContext
from keyshift.runtime import Runtime
from keyshift.stores.envstate import env_states
from keyshift.stores.file_backends import DirectoryFiles, FileBackend, backend
from keyshift.stores.keys import data_keys

STORE = "files"


def list_paths(rt: Runtime, env_id: str, name: str) -> list[str]:
    return [i.path for i in backend(rt, name).list(env_id, "")]


def sql_snapshot(session: Any, env_id: str) -> dict[str, str]:
    rows = session.execute(select(DataFile.path, DataFile.file_id).where(DataFile.environment_id == env_id))
    return {p: f for p, f in rows}


def _exists(b: FileBackend, env_id: str, path: str) -> bool:
    src = b.open(env_id, path)
    if src is None:
        return False
    src.close()
    return True


def copy_files(
    rt: Runtime, env_id: str, paths: list[str], *, source: str, ctx: BatchContext
) -> tuple[int, int]:
    keys = data_keys(rt)
    env = env_states(rt).get(env_id)
    src_b = backend(rt, source)
    dst_b = backend(rt, "sql" if source != "sql" else "file_storage")
    snapshot = (ctx.job.checkpoint or {}).get("sql_files_at_cut", {})
    copied = nbytes = 0
    for path in paths:
        ad = AssociatedData(env.tenant_id, env.id, STORE, STORE, path).encode()
        if dst_b.name == "sql":
            with rt.transaction() as s:
                now_id = s.scalars(
                    select(DataFile.file_id).where(DataFile.environment_id == env_id, DataFile.path == path)
                ).first()
            if now_id is not None and now_id != snapshot.get(path):
                continue  # a client wrote it during the restore: that write wins
        elif _exists(dst_b, env_id, path):
            continue  # already copied, or a client wrote it since cutover: leave it
        src = src_b.open(env_id, path)
        if src is None:
            continue  # deleted meanwhile
        try:
            reader = io.BufferedReader(
                DecryptingReader(src, lambda dek_id: keys.key_for(rt, env, STORE, dek_id), ad), 1 << 20
            )
        except IntegrityError:
            src.close()
            raise IntegrityError(f"file {path!r} of environment {env.name!r} failed authentication") from None
        try:
            key = keys.reserve(rt, env, STORE, 1)

            def produce(sink: Any, reader: Any = reader, key: Any = key, ad: bytes = ad) -> int:
                return encrypt_stream(key, _Marked(reader, ctx), sink, ad)  # type: ignore[arg-type]

            if isinstance(dst_b, DirectoryFiles):
                size = _put_if_absent(dst_b, env_id, path, produce)
            else:
                size = dst_b.write(env_id, path, produce, key.id.hex())
        finally:
            reader.close()
            src.close()
        if size is not None:
            copied += 1
            nbytes += size
    return copied, nbytes


class _Marked(io.RawIOBase):
    """Passes reads through; after the first chunk marks the point "move:mid-file" (tests crash there)."""

    def __init__(self, inner: Any, ctx: BatchContext) -> None:
        self.inner, self.ctx, self.reads = inner, ctx, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = int(self.inner.readinto(b))
        self.reads += 1
        if self.reads == 2:
            self.ctx.point("move:mid-file")
        return n


def _put_if_absent(b: DirectoryFiles, env_id: str, path: str, produce: Any) -> int | None:
    target = b.target_path(env_id, path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.parent / f".tmp-{secrets.token_hex(8)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=0) as raw:
            size = int(produce(raw))
            os.fsync(raw.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return size


def drop_all(rt: Runtime, env_id: str, name: str) -> None:
    b = backend(rt, name)
    for info in b.list(env_id, ""):
        b.delete(env_id, info.path)
