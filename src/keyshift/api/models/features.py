"""Feature storages: search index generations and results, lake exports, backups and restores."""

from __future__ import annotations

from typing import Any

from keyshift.api.models.base import Out, Ref, Timestamp


class SearchGeneration(Out):
    """A search index generation of a table; `job` is the id of the job that builds it."""

    table: str
    generation: int
    fields: list[str]
    state: str
    job: str | None
    started_at: Timestamp
    ready_at: Timestamp | None


class SearchResults(Out):
    table: str
    generation: int
    count: int
    results: list[dict[str, Any]]


class LakeExport(Out):
    path: str
    table: str
    rows: int
    size: int
    created_at: Timestamp


class Backup(Out):
    id: str
    environment: Ref
    state: str
    created_at: Timestamp
    expires_at: Timestamp
    size: int | None
    counts: dict[str, int]
    note: str | None
    created_by: str | None
    purged_at: Timestamp | None


class BackupRestored(Out):
    environment: Ref
    backup: str
    source: Ref
    restored: dict[str, int]
