"""Copying files between the SQL layout and file storage for moves (link) and returns (restore).

Each file is streamed: decrypted segment by segment from the source backend and re-encrypted
under the environment's primary "files" DEK into the destination — constant memory, no plaintext
temp file. A copy never replaces a client write, and never brings back a file a client deleted:
* every copy is put-if-absent (`write_if_absent`): directory — the finished temp file is
  hard-linked into place, which fails if a client wrote the path meanwhile; SQL — one transaction
  that checks and inserts under the path's lock; S3 — check, then write (a tiny window);
* just before the copy becomes visible it asks whether its source still exists; a client delete
  removes the old store's copy first (stores/files.py), so a copy racing a delete is taken back.
* a restore starts from an empty destination: at its cutover the retained pre-migration SQL copy
  is set aside (`stash_sql_files`, same transaction as the layout flip) and dropped at the end, so
  nothing older than file storage's current content can be read, listed or copied back.
"""

from __future__ import annotations

import io
from typing import Any

from sqlalchemy import delete, select, update

from keyshift.crypto.records import AssociatedData
from keyshift.crypto.stream import DecryptingReader, encrypt_stream
from keyshift.db.models import DataFile, DataFileChunk
from keyshift.errors import IntegrityError
from keyshift.jobs.context import BatchContext
from keyshift.runtime import Runtime
from keyshift.stores.envstate import env_states
from keyshift.stores.file_backends import FileBackend, backend
from keyshift.stores.keys import data_keys

STORE = "files"


def list_paths(rt: Runtime, env_id: str, name: str) -> list[str]:
    return [i.path for i in backend(rt, name).list(env_id, "")]


def stash_name(job_id: str) -> str:
    """The namespace a restore parks the pre-migration SQL files in (never an environment id)."""
    return f"~{job_id}"


def stash_sql_files(session: Any, env_id: str, job_id: str) -> int:
    """At a restore's cutover: move the environment's retained SQL files out of its namespace."""
    res = session.execute(
        update(DataFile).where(DataFile.environment_id == env_id).values(environment_id=stash_name(job_id))
    )
    return int(res.rowcount or 0)


def drop_stash(session: Any, job_id: str) -> int:
    """After a restore: delete the parked pre-migration files (chunks first)."""
    name = stash_name(job_id)
    ids = select(DataFile.file_id).where(DataFile.environment_id == name).scalar_subquery()
    session.execute(delete(DataFileChunk).where(DataFileChunk.file_id.in_(ids)))
    return int(session.execute(delete(DataFile).where(DataFile.environment_id == name)).rowcount or 0)


def _exists(b: FileBackend, env_id: str, path: str) -> bool:
    """Whether `path` is in `b`: asked per file twice by a copy, so without reading it (opening a
    SQL file read its first chunk, up to 1 MiB; opening an S3 object started a GET)."""
    exists = getattr(b, "exists", None)
    if exists is not None:
        return bool(exists(env_id, path))
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
    copied = nbytes = 0
    for path in paths:
        ad = AssociatedData(env.tenant_id, env.id, STORE, STORE, path).encode()
        if _exists(dst_b, env_id, path):
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

            def keep(path: str = path) -> bool:
                return _exists(src_b, env_id, path)  # deleted meanwhile: take the copy back

            size = dst_b.write_if_absent(env_id, path, produce, key.id.hex(), keep)
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


def drop_all(rt: Runtime, env_id: str, name: str) -> None:
    b = backend(rt, name)
    for info in b.list(env_id, ""):
        b.delete(env_id, info.path)
