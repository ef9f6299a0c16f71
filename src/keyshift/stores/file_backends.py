"""Where file ciphertexts live: a directory (embedded default), S3-compatible object storage, or
chunk rows in the state database (the SQL layout of legacy BYOK environments).

Every backend only ever sees ciphertext (crypto/stream.py output) and the caller's path. Writes are
atomic: a reader sees the old file or the new one, never a partial one.
* directory: ciphertext goes to a temp file in the target's own directory (0600), is fsynced and
  renamed over the target with os.replace; the directory is fsynced too. No plaintext temp file.
* S3: objects appear only when put_object / complete_multipart_upload succeeds; a failed multipart
  upload is aborted. Memory is one part buffer (8 MiB), whatever the file size.
* SQL: chunks are inserted under a fresh file id and the path row is switched in one transaction.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, urlparse

from sqlalchemy import Table, delete, func, insert, select

from keyshift.crypto.format import STREAM_HEADER_LEN, TAG_LEN
from keyshift.crypto.stream import DEFAULT_SEGMENT_SIZE
from keyshift.db.models import DataFile, DataFileChunk
from keyshift.db.types import new_id
from keyshift.errors import InternalError, UsageError
from keyshift.runtime import Runtime

SUFFIX = ".ksf"
SQL_CHUNK = 1 << 20
S3_PART = 8 << 20

Produce = Callable[[BinaryIO], int]  # writes ciphertext to the sink, returns plaintext bytes


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int  # plaintext bytes


def plaintext_size(ciphertext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Plaintext size of a stream written with `segment_size` (every full segment + tag, then the last)."""
    body = ciphertext_size - STREAM_HEADER_LEN
    if body < TAG_LEN:
        return 0
    full = segment_size + TAG_LEN
    segments = -(-body // full)
    return body - segments * TAG_LEN


class FileBackend(Protocol):
    name: str

    def write(self, env_id: str, path: str, produce: Produce, dek_hex: str) -> int: ...

    def open(self, env_id: str, path: str) -> BinaryIO | None: ...

    def delete(self, env_id: str, path: str) -> bool: ...

    def list(self, env_id: str, prefix: str) -> list[FileInfo]: ...


# -- directory ---------------------------------------------------------------------------------


class DirectoryFiles:
    name = "file_storage"

    def __init__(self, root: Path) -> None:
        self.root = root

    def target_path(self, env_id: str, path: str) -> Path:
        """Where the object of a (validated) path lives on disk; refuses a path escaping the root."""
        base = (self.root / env_id).resolve()
        parts = path.split("/")
        target = base.joinpath(*parts[:-1], parts[-1] + SUFFIX)
        # Defence in depth: validated paths cannot escape, but check the result anyway.
        if os.path.commonpath([base, target.resolve()]) != str(base):
            raise UsageError(f"path {path!r} escapes the file store", code="invalid_path")
        return target

    def write(self, env_id: str, path: str, produce: Produce, dek_hex: str) -> int:
        target = self.target_path(env_id, path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.parent / f".tmp-{secrets.token_hex(8)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb", buffering=0) as raw:
                size = produce(raw)  # type: ignore[arg-type]
                os.fsync(raw.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return size

    def open(self, env_id: str, path: str) -> BinaryIO | None:
        try:
            return open(self.target_path(env_id, path), "rb", buffering=0)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, env_id: str, path: str) -> bool:
        target = self.target_path(env_id, path)
        try:
            target.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        base = (self.root / env_id).resolve()
        parent = target.parent
        while parent != base:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
        return True

    def list(self, env_id: str, prefix: str) -> list[FileInfo]:
        base = self.root / env_id
        out: list[FileInfo] = []
        for dirpath, _dirs, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            for f in files:
                if not f.endswith(SUFFIX) or f.startswith(".tmp-"):
                    continue
                p = f[: -len(SUFFIX)] if rel == "." else f"{rel.replace(os.sep, '/')}/{f[: -len(SUFFIX)]}"
                if p.startswith(prefix):
                    out.append(FileInfo(p, plaintext_size(os.path.getsize(os.path.join(dirpath, f)))))
        return sorted(out, key=lambda i: i.path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def open(self, env_id: str, path: str) -> BinaryIO | None:
        from botocore.exceptions import ClientError

        def get() -> Any:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(env_id, path))["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        return self._call(get)  # type: ignore[no-any-return]

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

    def __init__(self, rt: Runtime, file_id: str) -> None:
        super().__init__()
        self.rt, self.file_id = rt, file_id
        self.seq = 0
        self.buf = b""
        self.pos = 0
        self.eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self.pos >= len(self.buf):
            if self.eof:
                return 0
            with self.rt.transaction() as s:
                data = s.execute(
                    select(_C.c.data).where(_C.c.file_id == self.file_id, _C.c.seq == self.seq)
                ).scalar_one_or_none()
            if data is None:
                self.eof = True
                return 0
            self.buf, self.pos = (data if isinstance(data, bytes) else bytes(data)), 0
            self.seq += 1
        out = memoryview(b).cast("B")
        n = min(out.nbytes, len(self.buf) - self.pos)
        out[:n] = self.buf[self.pos : self.pos + n]
        self.pos += n
        return n


class SqlFiles:
    name = "sql"

    def __init__(self, rt: Runtime, chunk: int = SQL_CHUNK) -> None:
        self.rt = rt
        self.chunk = chunk

    def write(self, env_id: str, path: str, produce: Produce, dek_hex: str) -> int:
        file_id = new_id("fil")
        with self.rt.transaction() as s:
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

    def _file_id(self, env_id: str, path: str) -> str | None:
        with self.rt.transaction() as s:
            return s.execute(  # type: ignore[no-any-return]
                select(_F.c.file_id).where(_F.c.environment_id == env_id, _F.c.path == path)
            ).scalar_one_or_none()

    def open(self, env_id: str, path: str) -> BinaryIO | None:
        file_id = self._file_id(env_id, path)
        return None if file_id is None else _ChunkReader(self.rt, file_id)  # type: ignore[return-value]

    def delete(self, env_id: str, path: str) -> bool:
        with self.rt.transaction() as s:
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


def backend(rt: Runtime, name: str) -> FileBackend:
    if name == "sql":
        return SqlFiles(rt)
    url = rt.settings.file_store_url
    if url:
        cache_key = "keyshift.stores.s3files"
        return rt.extension(cache_key, lambda r: S3Files(url, r.settings.file_store_endpoint))  # type: ignore[no-any-return]
    return DirectoryFiles(rt.settings.home_path() / "files")
