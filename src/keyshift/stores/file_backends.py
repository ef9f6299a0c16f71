"""Where file ciphertexts live: a directory (embedded default), S3-compatible object storage, or
chunk rows in the state database (the SQL layout of legacy BYOK environments).

Every backend only ever sees ciphertext (crypto/stream.py output) and the caller's path. Writes are
atomic: a reader sees the old file or the new one, never a partial one.
* directory (stores/file_dir.py): ciphertext goes to a temp file in the store's own temp directory
  (0600, a namespace no path maps to), is fsynced and renamed over the target with os.replace; the
  directory is fsynced too. No plaintext temp file.
* S3: objects appear only when put_object / complete_multipart_upload succeeds; a failed multipart
  upload is aborted. Memory is one part buffer (8 MiB), whatever the file size.
* SQL: chunks are inserted under a fresh file id and the path row is switched in one transaction
  (on PostgreSQL under a per-path transaction lock, so two writers of one path queue; SQLite takes
  the database write lock up front anyway).

Object keys on S3 are `<prefix>/<namespace>/<path>`: injective (S3 has no directories), but capped
at 1,024 bytes, so `max_path_bytes` lowers the path cap by the key's fixed part — for every
environment alike, whatever its current layout, so a later move to S3 cannot meet a path too long.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, urlparse

from sqlalchemy import Table, delete, func, insert, select, text

from keyshift.db.models import DataFile, DataFileChunk
from keyshift.db.types import new_id
from keyshift.errors import ConflictError, InternalError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.file_dir import SUFFIX, TEMP_MAX_AGE, DirectoryFiles
from keyshift.stores.file_types import FileInfo, Keep, Produce, plaintext_size

__all__ = [
    "SUFFIX",
    "DirectoryFiles",
    "FileBackend",
    "FileInfo",
    "Keep",
    "Produce",
    "backend",
    "plaintext_size",
]

SQL_CHUNK = 1 << 20
S3_PART = 8 << 20
S3_MAX_KEY = 1024
# the longest namespace a key can carry: an environment id plus a feature suffix (`.backups`)
NAMESPACE_RESERVE = len("env_") + 20 + len(".backups") + 2


class FileBackend(Protocol):
    name: str

    def write(self, env_id: str, path: str, produce: Produce, dek_hex: str) -> int: ...

    def open(self, env_id: str, path: str) -> BinaryIO | None: ...

    def delete(self, env_id: str, path: str) -> bool: ...

    def list(self, env_id: str, prefix: str) -> list[FileInfo]: ...

    def write_if_absent(
        self, env_id: str, path: str, produce: Produce, dek_hex: str, keep: Keep | None = None
    ) -> int | None: ...


# -- S3-compatible -------------------------------------------------------------------------------


class _PartSink(io.RawIOBase):
    """Collects ciphertext into parts; uploads each full part (multipart) as it fills."""

    def __init__(self, client: Any, bucket: str, key: str, part_size: int) -> None:
        self.client, self.bucket, self.key, self.part_size = client, bucket, key, part_size
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        self.buf += data
        while len(self.buf) >= self.part_size * 2:  # keep >= one part for the final upload
            self._upload(bytes(self.buf[: self.part_size]))
            del self.buf[: self.part_size]
        return n

    def _upload(self, body: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self.parts) + 1
        res = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        self.parts.append({"ETag": res["ETag"], "PartNumber": number})

    def commit(self) -> None:
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buf))
        else:
            self._upload(bytes(self.buf))
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        self.buf = bytearray()

    def abort(self) -> None:
        if self.upload_id is not None:
            # Best effort: the original error matters more than a failed abort.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        self.buf = bytearray()


class S3Files:
    name = "file_storage"

    def __init__(self, url: str, endpoint: str | None = None, part_size: int = S3_PART) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UsageError(
                f"file store URL must look like s3://bucket/prefix, not {url!r}", code="invalid_url"
            )
        query = parse_qs(parsed.query)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        endpoint = endpoint or next(iter(query.get("endpoint", [])), None)
        region = (query.get("region") or [os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"])[0]
        self.part_size = part_size
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            config=Config(retries={"max_attempts": 4, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def _key(self, env_id: str, path: str) -> str:
        return "/".join(p for p in (self.prefix, env_id, path) if p)

    def _call(self, fn: Callable[[], Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise InternalError(
                f"file storage refused the request ({code})", code="file_storage_error"
            ) from None
        except BotoCoreError as exc:
            raise InternalError(
                f"file storage is unavailable ({type(exc).__name__})", code="file_storage_unavailable"
            ) from None

    def write(self, env_id: str, path: str, produce: Produce, dek_hex: str) -> int:
        sink = _PartSink(self.client, self.bucket, self._key(env_id, path), self.part_size)
        try:
            size = produce(sink)  # type: ignore[arg-type]
            self._call(sink.commit)
        except BaseException:
            sink.abort()
            raise
        return size

    def write_if_absent(
        self, env_id: str, path: str, produce: Produce, dek_hex: str, keep: Keep | None = None
    ) -> int | None:
        """Check, then write (a migration's copy; S3 offers no portable put-if-absent here)."""
        key = self._key(env_id, path)
        if self._call(lambda: self._exists(key)):
            return None
        size = self.write(env_id, path, produce, dek_hex)
        if keep is not None and not keep():
            self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
            return None
        return size

    def clean_temp(self, max_age: float = TEMP_MAX_AGE) -> dict[str, int]:
        """Abort multipart uploads left by killed writers (started more than `max_age` ago)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age)
        removed = kept = 0
        base = self.prefix + "/" if self.prefix else ""

        def uploads() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=base
            ):
                out += page.get("Uploads", [])
            return out

        for up in self._call(uploads):
            if up["Initiated"] < cutoff:
                key, upload_id = str(up["Key"]), str(up["UploadId"])
                self._call(
                    functools.partial(
                        self.client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                )
                removed += 1
            else:
                kept += 1
        return {"removed": removed, "recent_kept": kept}

    def open(self, env_id: str, path: str) -> BinaryIO | None:
        from botocore.exceptions import ClientError

        def get() -> Any:
            try:
                res = self.client.get_object(Bucket=self.bucket, Key=self._key(env_id, path))
                body = res["Body"]
                body.ciphertext_size = int(res["ContentLength"])
                return body
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        return self._call(get)  # type: ignore[no-any-return]

    def exists(self, env_id: str, path: str) -> bool:
        """Whether the object exists (HEAD: its body is not fetched)."""
        key = self._key(env_id, path)
        return bool(self._call(lambda: self._exists(key)))

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise

    def delete(self, env_id: str, path: str) -> bool:
        key = self._key(env_id, path)
        if not self._call(lambda: self._exists(key)):
            return False
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        return True

    def list(self, env_id: str, prefix: str) -> list[FileInfo]:
        base = self._key(env_id, "") + "/"
        out: list[FileInfo] = []

        def pages() -> Iterator[dict[str, Any]]:
            yield from self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )

        for page in self._call(lambda: list(pages())):
            for obj in page.get("Contents", []):
                out.append(FileInfo(obj["Key"][len(base) :], plaintext_size(int(obj["Size"]))))
        return sorted(out, key=lambda i: i.path)


# -- SQL layout ----------------------------------------------------------------------------------

_F: Table = DataFile.__table__  # type: ignore[assignment]
_C: Table = DataFileChunk.__table__  # type: ignore[assignment]


class _ChunkSink(io.RawIOBase):
    def __init__(self, session: Any, file_id: str, chunk: int) -> None:
        self.session, self.file_id, self.chunk = session, file_id, chunk
        self.buf = bytearray()
        self.seq = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        self.buf += data
        while len(self.buf) >= self.chunk:
            self._flush(bytes(self.buf[: self.chunk]))
            del self.buf[: self.chunk]
        return n

    def _flush(self, data: bytes) -> None:
        self.session.execute(insert(_C).values(file_id=self.file_id, seq=self.seq, data=data))
        self.seq += 1

    def finish(self) -> None:
        if self.buf or self.seq == 0:
            self._flush(bytes(self.buf))
        self.buf = bytearray()


class _ChunkReader(io.RawIOBase):
    """Reads a file's chunks in order, one short query per chunk (constant memory)."""

    def __init__(
        self,
        rt: Runtime,
        file_id: str,
        plaintext_size: int | None = None,
        first: bytes | None = None,
        last_seq: int | None = None,
    ) -> None:
        super().__init__()
        self.rt, self.file_id = rt, file_id
        self.plaintext_size = plaintext_size
        self.last_seq = last_seq  # the file's last chunk, read with its path row
        self.seq = 0
        self.buf = b""
        self.pos = 0
        self.eof = False
        if first is not None:  # read with the path row: a file of one chunk is one consistent read
            self.buf, self.seq = first, 1

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self.pos >= len(self.buf):
            if self.eof or (self.last_seq is not None and self.seq > self.last_seq):
                self.eof = True
                return 0
            with self.rt.transaction() as s:
                data = s.execute(
                    select(_C.c.data).where(_C.c.file_id == self.file_id, _C.c.seq == self.seq)
                ).scalar_one_or_none()
            if data is None:
                if self.last_seq is not None and self.seq <= self.last_seq:
                    # its chunks went away: replaced or deleted while being read — not corruption
                    raise ConflictError(
                        "the file was replaced or deleted while it was being read; read it again",
                        code="file_changed_during_read",
                    )
                self.eof = True
                return 0
            self.buf, self.pos = (data if isinstance(data, bytes) else bytes(data)), 0
            self.seq += 1
        out = memoryview(b).cast("B")
        n = min(out.nbytes, len(self.buf) - self.pos)
        out[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n


class _Unwanted(Exception):
    pass


class SqlFiles:
    name = "sql"

    def __init__(self, rt: Runtime, chunk: int = SQL_CHUNK) -> None:
        self.rt = rt
        self.chunk = chunk

    @staticmethod
    def _lock_path(s: Any, env_id: str, path: str) -> None:
        """PostgreSQL: writers and deleters of one path queue on a transaction lock (else two
        first writes of a path could both insert); SQLite already serializes every write."""
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"ksf:{env_id}:{path}"})

    def write(self, env_id: str, path: str, produce: Produce, dek_hex: str) -> int:
        file_id = new_id("fil")
        with self.rt.transaction() as s:
            self._lock_path(s, env_id, path)
            sink = _ChunkSink(s, file_id, self.chunk)
            size = produce(sink)  # type: ignore[arg-type]
            sink.finish()
            old = s.execute(
                select(_F.c.file_id).where(_F.c.environment_id == env_id, _F.c.path == path)
            ).scalar_one_or_none()
            if old is not None:
                s.execute(delete(_F).where(_F.c.environment_id == env_id, _F.c.path == path))
                s.execute(delete(_C).where(_C.c.file_id == old))
            s.execute(
                insert(_F).values(
                    environment_id=env_id,
                    path=path,
                    file_id=file_id,
                    size=size,
                    dek_id=dek_hex,
                    created_at=self.rt.clock.now(),
                )
            )
        return size

    def write_if_absent(
        self, env_id: str, path: str, produce: Produce, dek_hex: str, keep: Keep | None = None
    ) -> int | None:
        """Put-if-absent in one transaction (a migration's copy): a client write of the path that
        commits first wins; one that comes later replaces the copy. `keep()` is asked before the
        commit: if the source was deleted during the copy, nothing is stored."""
        file_id = new_id("fil")
        try:
            return self._insert_if_absent(env_id, path, produce, dek_hex, keep, file_id)
        except _Unwanted:
            return None

    def _insert_if_absent(
        self, env_id: str, path: str, produce: Produce, dek_hex: str, keep: Keep | None, file_id: str
    ) -> int | None:
        with self.rt.transaction() as s:
            self._lock_path(s, env_id, path)
            exists = s.execute(
                select(_F.c.file_id).where(_F.c.environment_id == env_id, _F.c.path == path)
            ).first()
            if exists is not None:
                return None
            sink = _ChunkSink(s, file_id, self.chunk)
            size = produce(sink)  # type: ignore[arg-type]
            sink.finish()
            if keep is not None and not keep():
                raise _Unwanted  # rolls the chunks back
            s.execute(
                insert(_F).values(
                    environment_id=env_id,
                    path=path,
                    file_id=file_id,
                    size=size,
                    dek_id=dek_hex,
                    created_at=self.rt.clock.now(),
                )
            )
        return size

    def open(self, env_id: str, path: str) -> BinaryIO | None:
        # one statement (one snapshot, also under READ COMMITTED): path row, first chunk, last seq
        c_last = _C.alias("c_last")
        last = (
            select(func.max(c_last.c.seq))
            .where(c_last.c.file_id == _F.c.file_id)
            .correlate(_F)
            .scalar_subquery()
        )
        with self.rt.transaction() as s:
            row = s.execute(
                select(_F.c.file_id, _F.c.size, _C.c.data, last)
                .join(_C, (_C.c.file_id == _F.c.file_id) & (_C.c.seq == 0))
                .where(_F.c.environment_id == env_id, _F.c.path == path)
            ).first()
        if row is None:
            return None
        return _ChunkReader(self.rt, row[0], int(row[1]), bytes(row[2]), int(row[3]))  # type: ignore[return-value]

    def exists(self, env_id: str, path: str) -> bool:
        """Whether the path row exists (no chunk is read)."""
        with self.rt.transaction() as s:
            row = s.execute(select(_F.c.file_id).where(_F.c.environment_id == env_id, _F.c.path == path))
            return row.first() is not None

    def delete(self, env_id: str, path: str) -> bool:
        with self.rt.transaction() as s:
            self._lock_path(s, env_id, path)
            old = s.execute(
                select(_F.c.file_id).where(_F.c.environment_id == env_id, _F.c.path == path)
            ).scalar_one_or_none()
            if old is None:
                return False
            s.execute(delete(_F).where(_F.c.environment_id == env_id, _F.c.path == path))
            s.execute(delete(_C).where(_C.c.file_id == old))
            return True

    def list(self, env_id: str, prefix: str) -> list[FileInfo]:
        stmt = select(_F.c.path, _F.c.size).where(_F.c.environment_id == env_id).order_by(_F.c.path)
        if prefix:
            stmt = stmt.where(func.substr(_F.c.path, 1, len(prefix)) == prefix)
        with self.rt.transaction() as s:
            return [FileInfo(p, int(n)) for p, n in s.execute(stmt)]


def max_path_bytes(rt: Runtime, limit: int) -> int:
    """The longest file path (bytes) any layout of this deployment can hold: `limit`, lowered so
    that an S3 key (prefix/namespace/path) stays within S3's 1,024 bytes."""
    url = rt.settings.file_store_url
    if not url:
        return limit
    prefix = urlparse(url).path.strip("/")
    fixed = len(prefix.encode()) + (1 if prefix else 0) + NAMESPACE_RESERVE
    return min(limit, S3_MAX_KEY - fixed)


def clean_temp_files(rt: Runtime) -> dict[str, int]:
    """Maintenance: remove the file storage's temp files orphaned by killed writers."""
    b = backend(rt, "file_storage")
    clean = getattr(b, "clean_temp", None)
    return clean() if callable(clean) else {"removed": 0, "recent_kept": 0}


def backend(rt: Runtime, name: str) -> FileBackend:
    if name == "sql":
        return SqlFiles(rt)
    url = rt.settings.file_store_url
    if url:
        cache_key = "keyshift.stores.s3files"
        return rt.extension(cache_key, lambda r: S3Files(url, r.settings.file_store_endpoint))  # type: ignore[no-any-return]
    return DirectoryFiles(rt.settings.home_path() / "files")
