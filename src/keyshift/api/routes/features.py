"""Feature storages of an environment: blind search, data lake exports, backups and restore.

Each route calls the same service function as the CLI (`keyshift.features.*`); refusals (feature not
enabled, SQL restriction of a legacy BYOK tenant, index still building) come from there as domain
errors. Searching is open to service tokens granted the environment and to its tenant's readers;
everything else is control plane of the environment (tenant admins; readers may list).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status
from pydantic import Field

from keyshift.api.access import Ctx, allow
from keyshift.api.models.features import Backup, BackupRestored, LakeExport, SearchGeneration, SearchResults
from keyshift.api.schemas import FIELD_PATTERN, Body, Integral, TableName
from keyshift.features import backups, restore, search, search_jobs

router = APIRouter(tags=["features"])

API_PREFIX = "/api/v1"
RETRY_AFTER_SECONDS = 2

Field_ = Annotated[str, Field(min_length=1, max_length=200, json_schema_extra={"pattern": FIELD_PATTERN})]


class SearchFieldsSet(Body):
    fields: list[Field_] = Field(min_length=1, max_length=50)


class LakeExportCreate(Body):
    table: TableName


class BackupCreate(Body):
    retention_days: Annotated[int, Field(ge=1, le=36500), Integral] | None = None
    note: Annotated[str, Field(max_length=500)] | None = None


# -- search ----------------------------------------------------------------------------------------
@router.put(
    "/environments/{env}/tables/{table}/search-fields",
    response_model=SearchGeneration,
    status_code=status.HTTP_202_ACCEPTED,
)
def set_search_fields(
    env: str, table: str, body: SearchFieldsSet, response: Response, ctx: Ctx = allow("env", write=True)
) -> dict[str, Any]:
    """Declare the table's searchable JSON fields: the new index generation (202; it names its
    `job`, also in Location) is built by a job while the previous generation keeps answering."""
    view = search_jobs.set_fields(ctx.rt, env, table, list(body.fields))
    response.headers["Location"] = f"{API_PREFIX}/jobs/{view['job']}"
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return view


@router.get("/environments/{env}/tables/{table}/search", response_model=SearchResults)
def search_table(
    env: str,
    table: str,
    q: str = Query(min_length=1, max_length=1000),
    limit: int = Query(default=10, ge=1, le=search.MAX_LIMIT),
    ctx: Ctx = allow("env_data"),
) -> dict[str, Any]:
    """Records whose searchable fields hold every word of `q` (decrypted)."""
    return search.search(ctx.rt, env, table, q, limit=limit)


# -- data lake -------------------------------------------------------------------------------------
@router.post(
    "/environments/{env}/lake/exports", response_model=LakeExport, status_code=status.HTTP_201_CREATED
)
def export_table(env: str, body: LakeExportCreate, ctx: Ctx = allow("env", write=True)) -> dict[str, Any]:
    """Export every record of a table to an encrypted Parquet file in the environment's lake."""
    from keyshift.features import lake  # needs the 'lake' extra (pyarrow)

    return lake.export_table(ctx.rt, env, body.table)


@router.get("/environments/{env}/lake/exports", response_model=list[LakeExport])
def list_exports(env: str, ctx: Ctx = allow("env")) -> list[dict[str, Any]]:
    from keyshift.features import lake

    return lake.list_exports(ctx.rt, env)


# -- backups ---------------------------------------------------------------------------------------
@router.post("/environments/{env}/backups", response_model=Backup, status_code=status.HTTP_201_CREATED)
def create_backup(
    env: str, body: BackupCreate | None = None, ctx: Ctx = allow("env", write=True)
) -> dict[str, Any]:
    """Take an encrypted backup of the environment (feature long-term-retention)."""
    body = body or BackupCreate()
    return backups.create_backup(ctx.rt, env, retention_days=body.retention_days, note=body.note)


@router.get("/environments/{env}/backups", response_model=list[Backup])
def list_backups(env: str, include_purged: bool = False, ctx: Ctx = allow("env")) -> list[dict[str, Any]]:
    return backups.list_backups(ctx.rt, env, include_purged=include_purged)


@router.post("/environments/{env}/backups/{backup}/restore", response_model=BackupRestored)
def restore_backup(
    env: str, backup: str = Path(max_length=40), ctx: Ctx = allow("env", write=True)
) -> dict[str, Any]:
    """Restore one of the environment's backups into it (replacing its data)."""
    ctx.require_backup(backup)
    return restore.restore_backup(ctx.rt, env, backup)
