"""Files of one environment: put, streaming open, get, delete, list.

Contents are encrypted with the segmented streaming AEAD (crypto/stream.py) under the store's
primary "files" DEK, associated data = (tenant, environment, "files", "files", path), so memory
stays constant for any size and truncation, reordering or a ciphertext moved to another path are
detected (IntegrityError naming the path). The backend is the environment's layout choice (file
storage — a directory or S3 — or the SQL layout); during a move ("files_from": "sql") reads and
lists see the new store first, then the legacy one.

Paths: 1-1024 bytes of '/'-separated segments; no empty, '.' or '..' segment, no leading '/', no
backslash, NUL or other control characters, segments at most 200 bytes; with S3 file storage,
short enough for an object key (`file_backends.max_path_bytes`) — in every layout alike, so a later
move cannot meet a path its destination cannot hold. Anything else is a UsageError and nothing is
touched. Every accepted path has its own place in every backend (see stores/file_dir.py).

A download knows the exact plaintext size before the first byte (`open_sized`). A delete removes
the legacy copy (during a move) before the new one, so a racing move copy never resurrects it.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, BinaryIO

from keyshift.crypto.records import AssociatedData
from keyshift.crypto.stream import DecryptingReader, encrypt_stream
from keyshift.errors import ConflictError, IntegrityError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.file_backends import FileBackend, FileInfo, backend, max_path_bytes, plaintext_size
from keyshift.stores.keys import data_keys
from keyshift.stores.layout import choose, union

STORE = "files"
MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 200
SQL_MAX_FILE = 128 << 20
READ_CHUNK = 1 << 20
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_path(path: object, *, what: str = "path") -> str:
    if not isinstance(path, str) or not path:
        raise UsageError(f"a file {what} is required", code="invalid_path")
    raw = path.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PATH_BYTES:
        raise UsageError(f"file {what} is longer than {MAX_PATH_BYTES} bytes", code="invalid_path")
    if _BAD_CHARS.search(path):
        raise UsageError(f"file {what} {path!r} holds a backslash or control character", code="invalid_path")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UsageError(f"file {what} {path!r} must be relative", code="invalid_path")
    for seg in path.split("/"):
        if seg in ("", ".", ".."):
            raise UsageError(f"file {what} {path!r} has an empty, '.' or '..' segment", code="invalid_path")
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise UsageError(f"a segment of file {what} {path!r} is too long", code="invalid_path")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"file {what} is not valid text", code="invalid_path") from None
    return path


def validate_prefix(prefix: object) -> str:
    if prefix in (None, ""):
        return ""
    if not isinstance(prefix, str):
        raise UsageError("a prefix is text", code="invalid_path")
    trimmed = prefix.rstrip("/")
    if trimmed:
        validate_path(trimmed, what="prefix")
    return prefix


class _Limited(io.RawIOBase):
    """Passes reads through, refusing once more than `limit` bytes were read (SQL layout cap)."""

    def __init__(self, src: BinaryIO, limit: int) -> None:
        super().__init__()
        self.src, self.limit, self.seen = src, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        readinto = getattr(self.src, "readinto", None)
        if readinto is not None:
            n = readinto(b) or 0
        else:
            data = self.src.read(len(memoryview(b)))
            n = len(data or b"")
            memoryview(b).cast("B")[:n] = data or b""
        self.seen += n
        if self.seen > self.limit:
            raise ConflictError(
                f"files kept in the SQL store are limited to {self.limit >> 20} MiB",
                code="file_too_large_for_sql",
            )
        return n


class _NamedReader(io.RawIOBase):
    """A decrypting reader whose integrity errors name the file."""

    def __init__(self, inner: DecryptingReader, src: BinaryIO, label: str) -> None:
        super().__init__()
        self.inner, self.src, self.label = inner, src, label

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            return int(self.inner.readinto(b))
        except IntegrityError:
            raise IntegrityError(f"{self.label} failed authentication (corrupt or truncated)") from None

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
            close = getattr(self.src, "close", None)
            if callable(close):
                close()
        super().close()


class FileStore:
    """Files of one environment. Obtain through `stores.service.EnvironmentData`."""

    def __init__(self, rt: Runtime, env_id: str) -> None:
        self.rt = rt
        self.env_id = env_id
        self._keys = data_keys(rt)
        self._states = env_states(rt)

    def _ad(self, env: EnvView, path: str) -> bytes:
        return AssociatedData(env.tenant_id, env.id, STORE, STORE, path).encode()

    def _backends(self, env: EnvView) -> tuple[FileBackend, FileBackend | None]:
        choice = choose(env, "files")
        legacy = backend(self.rt, choice.legacy) if choice.legacy else None
        return backend(self.rt, choice.backend), legacy

    def put(self, path: str, data: bytes | bytearray | memoryview | BinaryIO) -> dict[str, Any]:
        """Store a file from bytes or a binary file object (read in chunks, never all at once)."""
        validate_path(path)
        self._check_fits(path)
        if isinstance(data, bytes | bytearray | memoryview):
            src: BinaryIO = io.BytesIO(data)
            known: int | None = len(memoryview(data).cast("B"))
        elif hasattr(data, "read"):
            src, known = data, _known_size(data)
        else:
            raise UsageError("file data must be bytes or a binary file object", code="invalid_value")
        env = self._states.require_usable(self.env_id)
        target, _ = self._backends(env)
        if target.name == "sql":
            if known is not None and known > SQL_MAX_FILE:
                raise ConflictError(
                    f"files kept in the SQL store are limited to {SQL_MAX_FILE >> 20} MiB",
                    code="file_too_large_for_sql",
                )
            src = _Limited(src, SQL_MAX_FILE)  # type: ignore[assignment]
        key = self._keys.reserve(self.rt, env, STORE, 1)
        ad = self._ad(env, path)
        size = target.write(env.id, path, lambda sink: encrypt_stream(key, src, sink, ad), key.id.hex())
        self._keys.note_use(env.id, key.id, size)
        return {"path": path, "size": size, "store": target.name}

    def _check_fits(self, path: str) -> None:
        cap = max_path_bytes(self.rt, MAX_PATH_BYTES)
        if len(path.encode("utf-8")) > cap:
            raise UsageError(
                f"file path is longer than {cap} bytes (the file storage's object keys hold no more)",
                code="invalid_path",
            )

    def open(self, path: str) -> BinaryIO:
        """A streaming reader of the plaintext (authenticated segment by segment). Close it."""
        return self.open_sized(path)[0]

    def open_sized(self, path: str) -> tuple[BinaryIO, int]:
        """A streaming reader and the exact plaintext size, known before the first byte (from the
        stored size, or the ciphertext size and the header's segment size) — what a download
        sends as Content-Length, so a client can tell a body cut short by a failed segment."""
        validate_path(path)
        env = self._states.require_usable(self.env_id)
        target, legacy = self._backends(env)
        src = target.open(env.id, path)
        if src is None and legacy is not None:
            src = legacy.open(env.id, path)
        if src is None:
            raise NotFoundError(f"file {path!r} not found", code="file_not_found")
        label = f"file {path!r} of environment {env.name!r}"
        try:
            inner = DecryptingReader(
                src, lambda dek_id: self._keys.key_for(self.rt, env, STORE, dek_id), self._ad(env, path)
            )
        except IntegrityError:
            src.close()
            raise IntegrityError(f"{label} failed authentication (corrupt or truncated)") from None
        except BaseException:
            src.close()
            raise
        size = _plaintext_size(src, inner.header.segment_size)
        reader = io.BufferedReader(_NamedReader(inner, src, label), buffer_size=READ_CHUNK)
        return reader, size  # type: ignore[return-value]

    def get(self, path: str) -> bytes:
        with self.open(path) as f:
            return f.read()

    def copy_to(self, path: str, dst: BinaryIO) -> int:
        """Stream a file's plaintext into dst; returns bytes written. dst is complete only without error."""
        total = 0
        with self.open(path) as f:
            while chunk := f.read(READ_CHUNK):
                dst.write(chunk)
                total += len(chunk)
        return total

    def delete(self, path: str) -> None:
        validate_path(path)
        env = self._states.require_usable(self.env_id)
        target, legacy = self._backends(env)
        # the legacy store first: a migration copying this path puts its copy in `target` only if
        # the source is still there when the copy lands, so it can never bring the file back
        found = legacy.delete(env.id, path) if legacy is not None else False
        found = target.delete(env.id, path) or found
        if not found:
            raise NotFoundError(f"file {path!r} not found", code="file_not_found")

    def list(self, prefix: str = "") -> list[dict[str, Any]]:
        prefix = validate_prefix(prefix)
        env = self._states.require_usable(self.env_id)
        target, legacy = self._backends(env)
        items: list[FileInfo] = target.list(env.id, prefix)
        if legacy is not None:
            items = sorted(
                union(items, legacy.list(env.id, prefix), key=lambda i: i.path), key=lambda i: i.path
            )
        return [{"path": i.path, "size": i.size} for i in items]


def _plaintext_size(src: Any, segment_size: int) -> int:
    known = getattr(src, "plaintext_size", None)
    if isinstance(known, int):
        return known
    ct = getattr(src, "ciphertext_size", None)
    if not isinstance(ct, int):
        ct = os.fstat(src.fileno()).st_size
    return plaintext_size(ct, segment_size)


def _known_size(f: Any) -> int | None:
    """Remaining bytes of a seekable regular file, else None."""
    try:
        fileno = f.fileno()
        st = os.fstat(fileno)
        pos = f.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    import stat

    return max(0, st.st_size - pos) if stat.S_ISREG(st.st_mode) else None
