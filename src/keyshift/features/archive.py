"""The plaintext layout inside a backup archive (which is then encrypted as one stream).

An archive is a sequence of entries: kind (1 byte) | header length (u32 BE) | header (UTF-8 JSON
object) | body as chunks, each u32 BE length | bytes, ended by a zero-length chunk. Kinds:
H archive header, S search index fields, R record (body = the record's tagged plaintext), A audit
event (body = JSON), L lake export (body = the encrypted Parquet bytes), F file (body = contents),
E end (counts). Headers are capped at 64 KiB and chunks at 4 MiB; anything else is an
IntegrityError (the stream is authenticated, so this only guards the parser).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from keyshift.errors import IntegrityError

FORMAT = 1
KINDS = frozenset(b"HSRALFE")
MAX_HEADER = 64 << 10
MAX_CHUNK = 4 << 20
CHUNK = 1 << 20
_U32 = struct.Struct(">I")
CORRUPT = "backup archive is corrupt"


def entry(kind: bytes, header: dict[str, Any], body: Iterable[bytes] = ()) -> Iterator[bytes]:
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    yield kind + _U32.pack(len(head)) + head
    for chunk in body:
        for i in range(0, len(chunk), MAX_CHUNK):
            part = chunk[i : i + MAX_CHUNK]
            if part:
                yield _U32.pack(len(part)) + bytes(part)
    yield _U32.pack(0)


def read_file_chunks(f: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def _exact(src: BinaryIO, n: int) -> bytes:
    data = src.read(n)
    if data is None or len(data) != n:
        raise IntegrityError(CORRUPT)
    return bytes(data)


class Entry:
    def __init__(self, src: BinaryIO, kind: str, header: dict[str, Any]) -> None:
        self.src, self.kind, self.header = src, kind, header
        self.done = False

    def chunks(self) -> Iterator[bytes]:
        if self.done:
            return
        while True:
            (n,) = _U32.unpack(_exact(self.src, 4))
            if n == 0:
                self.done = True
                return
            if n > MAX_CHUNK:
                raise IntegrityError(CORRUPT)
            yield _exact(self.src, n)

    def body(self, cap: int) -> bytes:
        out = bytearray()
        for c in self.chunks():
            out += c
            if len(out) > cap:
                raise IntegrityError(CORRUPT)
        return bytes(out)

    def drain(self) -> int:
        return sum(len(c) for c in self.chunks())


def entries(src: BinaryIO) -> Iterator[Entry]:
    """Entries in order; the caller reads (or drains) each body before asking for the next."""
    last: Entry | None = None
    while True:
        if last is not None and not last.done:
            last.drain()
        kind = src.read(1)
        if not kind:
            raise IntegrityError(CORRUPT)  # every archive ends with an E entry
        if kind[0] not in KINDS:
            raise IntegrityError(CORRUPT)
        (n,) = _U32.unpack(_exact(src, 4))
        if n > MAX_HEADER:
            raise IntegrityError(CORRUPT)
        try:
            header = json.loads(_exact(src, n))
        except ValueError:
            raise IntegrityError(CORRUPT) from None
        if not isinstance(header, dict):
            raise IntegrityError(CORRUPT)
        last = Entry(src, kind.decode("ascii"), header)
        yield last
        if last.kind == "E":
            last.drain()
            if src.read(1):
                raise IntegrityError(CORRUPT)
            return
