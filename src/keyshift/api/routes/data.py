"""Data plane: records, audit events, files (streaming upload and download).

Every route goes through `stores.service.EnvironmentData` — the same service the SDK and the CLI
use; a disabled or locked environment answers 423, an inaccessible key 424.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, BinaryIO

import anyio.from_thread
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from keyshift.api.access import Ctx, allow
from keyshift.api.models.data import (
    AuditAppended,
    FileDeleted,
    FileEntry,
    FileWritten,
    Record,
    RecordDeleted,
    RecordWritten,
)
from keyshift.api.schemas import MAX_VERSION, AuditAppend, IsoTime, RecordPut
from keyshift.clock import parse_time
from keyshift.stores.service import EnvironmentData

router = APIRouter(tags=["data plane"])

CHUNK = 1 << 16


def _data(ctx: Ctx, env: str) -> EnvironmentData:
    return EnvironmentData(ctx.rt, env)


# -- records ---------------------------------------------------------------------------------------
@router.get("/environments/{env}/records/{table}", response_model=list[Record])
def list_records(
    response: Response,
    env: str,
    table: str,
    after: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=100, ge=1, le=10_000),
    ctx: Ctx = allow("data"),
) -> list[dict[str, Any]]:
    """One page of a table's records in id order. A full page carries `X-Next-After` (the last id):
    pass it as `after` for the next page; a page without it is the last."""
    records = _data(ctx, env).records.scan(table, after=after, limit=limit)
    if len(records) == limit:
        response.headers["X-Next-After"] = records[-1].id
    return [r.to_dict() for r in records]


@router.get("/environments/{env}/records/{table}/{record_id}", response_model=Record)
def get_record(env: str, table: str, record_id: str, ctx: Ctx = allow("data")) -> dict[str, Any]:
    return _data(ctx, env).records.get_record(table, record_id).to_dict()


@router.put("/environments/{env}/records/{table}/{record_id}", response_model=RecordWritten)
def put_record(
    env: str, table: str, record_id: str, body: RecordPut, ctx: Ctx = allow("data", write=True)
) -> dict[str, Any]:
    """Write a record (JSON value); `expected_version` makes it a compare-and-swap."""
    version = _data(ctx, env).records.put(
        table, record_id, body.value, expected_version=body.expected_version
    )
    return {"id": record_id, "version": version}


@router.delete("/environments/{env}/records/{table}/{record_id}", response_model=RecordDeleted)
def delete_record(
    env: str,
    table: str,
    record_id: str,
    expected_version: int | None = Query(default=None, ge=0, le=MAX_VERSION),
    ctx: Ctx = allow("data", write=True),
) -> dict[str, Any]:
    _data(ctx, env).records.delete(table, record_id, expected_version=expected_version)
    return {"id": record_id, "deleted": True}


# -- audit -----------------------------------------------------------------------------------------
@router.post("/environments/{env}/audit", response_model=AuditAppended, status_code=status.HTTP_201_CREATED)
def append_audit(env: str, body: AuditAppend, ctx: Ctx = allow("data", write=True)) -> dict[str, Any]:
    return {"id": _data(ctx, env).audit.append(body.event)}


@router.get("/environments/{env}/audit", response_model=list[dict[str, Any]])
def query_audit(
    env: str,
    since: IsoTime | None = Query(default=None),
    until: IsoTime | None = Query(default=None),
    limit: int = Query(default=100, ge=1, le=10_000),
    ctx: Ctx = allow("data"),
) -> list[dict[str, Any]]:
    return _data(ctx, env).audit.query(
        since=parse_time(since) if since else None, until=parse_time(until) if until else None, limit=limit
    )


# -- files -----------------------------------------------------------------------------------------
@router.get("/environments/{env}/files", response_model=list[FileEntry])
def list_files(
    env: str, prefix: str = Query(default="", max_length=1024), ctx: Ctx = allow("data")
) -> list[dict[str, Any]]:
    return _data(ctx, env).files.list(prefix)


class _BodyReader:
    """A blocking, file-like view of the request body stream for a worker thread."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buffer = b""
        self._done = False

    async def _next(self) -> bytes | None:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = anyio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
            else:
                self._buffer += chunk
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


@router.put(
    "/environments/{env}/files/{path:path}",
    response_model=FileWritten,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def put_file(
    env: str, path: str, request: Request, ctx: Ctx = allow("data", write=True)
) -> dict[str, Any]:
    """Upload a file: the body is streamed and encrypted segment by segment (constant memory)."""
    data = await run_in_threadpool(_data, ctx, env)
    reader: BinaryIO = _BodyReader(request.stream())  # type: ignore[assignment]
    result: dict[str, Any] = await run_in_threadpool(data.files.put, path, reader)
    return result


@router.get(
    "/environments/{env}/files/{path:path}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
def get_file(env: str, path: str, ctx: Ctx = allow("data")) -> StreamingResponse:
    """Download a file, decrypted and authenticated segment by segment as it streams.

    Content-Length is the exact plaintext size (known before the first byte): if a later segment
    fails authentication the stream stops and the connection closes short of it, so a client can
    always tell a truncated body from a complete one."""
    reader, size = _data(ctx, env).files.open_sized(path)

    def chunks() -> Iterator[bytes]:
        with reader:
            while chunk := reader.read(CHUNK):
                yield chunk

    return StreamingResponse(
        chunks(), media_type="application/octet-stream", headers={"Content-Length": str(size)}
    )


@router.delete("/environments/{env}/files/{path:path}", response_model=FileDeleted)
def delete_file(env: str, path: str, ctx: Ctx = allow("data", write=True)) -> dict[str, Any]:
    _data(ctx, env).files.delete(path)
    return {"path": path, "deleted": True}
