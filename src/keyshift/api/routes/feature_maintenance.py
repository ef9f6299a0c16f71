"""The feature routes the CLI had before the API: reading a lake export back (`lake read`), the search
indexes' maintenance (`data search-indexes`, `data search-rekey`) and `env copy`.

Each route calls the CLI's service function. Role rules follow what those calls touch: reading an
export back returns decrypted records, so it is open to whoever may read the environment's feature
data (its tenant's admins and readers, service tokens granted it — like search); listing the index
generations is control-plane read; re-keying the search index and copying are control-plane writes of
the destination environment, and the copy's source must be an environment the caller may address.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import BaseModel, Field, PlainSerializer

from keyshift.api.access import Ctx, allow
from keyshift.api.models.base import Ref as ObjectRef
from keyshift.api.schemas import Body, Ref
from keyshift.errors import ConflictError
from keyshift.features import restore, search_jobs
from keyshift.timefmt import iso_z

router = APIRouter(tags=["features"])

RETRY_AFTER_SECONDS = 2
MAX_READ_ROWS = 100_000  # keyshift.features.lake.MAX_READ_ROWS (that module needs the 'lake' extra)

UtcTime = Annotated[datetime, PlainSerializer(iso_z, return_type=str, when_used="json")]


class LakeRecord(BaseModel):
    id: str
    version: int
    updated_at: UtcTime
    value: Any = Field(description="The record's JSON value, decrypted.")


class LakeRead(BaseModel):
    path: str
    rows: int = Field(description="Rows in the export.")
    returned: int = Field(description="Rows in `records` (at most `limit`).")
    records: list[LakeRecord]


class SearchGeneration(BaseModel):
    table: str
    generation: int
    fields: list[str]
    state: str = Field(description="`building` or `active`.")
    job: str | None = Field(description="The job that builds (built) this generation.")
    started_at: UtcTime
    ready_at: UtcTime | None


class EnvironmentCopy(Body):
    source: Ref = Field(description="The environment whose data is copied (same tenant, same key).")


class CopyResult(BaseModel):
    environment: ObjectRef = Field(description="The destination.")
    source: ObjectRef = Field(description="The environment copied from.")
    backup: str = Field(description="The backup of the source taken for the copy.")
    restored: dict[str, int] = Field(description="What was copied, counted per store.")


@router.get(
    "/environments/{env}/lake/exports/{export:path}",
    response_model=LakeRead,
    operation_id="lake_exports_read",
)
def read_export(
    env: str,
    export: Annotated[str, Path(min_length=1, max_length=1024, description="The export's `path`.")],
    limit: Annotated[int, Query(ge=1, le=MAX_READ_ROWS)] = 1000,
    ctx: Ctx = allow("env_data"),
) -> dict[str, Any]:
    """Read an export back, decrypted through the environment's key (at most `limit` rows)."""
    from keyshift.features import lake  # needs the 'lake' extra (pyarrow)

    return lake.read_export(ctx.rt, env, export, limit=limit)


@router.get(
    "/environments/{env}/search-indexes",
    response_model=list[SearchGeneration],
    operation_id="search_indexes_list",
)
def list_search_indexes(env: str, ctx: Ctx = allow("env")) -> list[dict[str, Any]]:
    """The environment's live search index generations (fields, state, the job that builds them)."""
    return search_jobs.describe(ctx.rt, env)


@router.post(
    "/environments/{env}/search-indexes/rekey",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=list[SearchGeneration],
    operation_id="search_indexes_rekey",
    responses={
        202: {
            "description": "The new generations, each built by its own job (poll `/jobs/{job}`).",
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before polling the jobs.",
                    "schema": {"type": "integer"},
                    "required": True,
                }
            },
        }
    },
)
def rekey_search(env: str, response: Response, ctx: Ctx = allow("env", write=True)) -> list[dict[str, Any]]:
    """Replace the environment's search key and rebuild every table's index as jobs (the previous
    generation keeps answering meanwhile)."""
    generations = search_jobs.rekey(ctx.rt, env)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return generations


@router.post("/environments/{env}/copy", response_model=CopyResult, operation_id="environments_copy")
def copy_environment(env: str, body: EnvironmentCopy, ctx: Ctx = allow("env", write=True)) -> dict[str, Any]:
    """Copy `source`'s data into this environment (replacing it): only between environments of one
    tenant encrypted under the same key."""
    source_id, _ = ctx.require_env(body.source)
    if source_id == ctx.require_env(env)[0]:
        raise ConflictError(
            "source and destination are the same environment: copy into another one",
            code="same_environment",
        )
    return restore.copy_environment(ctx.rt, body.source, env)
