"""The data plane: records, audit events (caller content), files."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from keyshift.api.models.base import Out, Timestamp


class Record(Out):
    id: str
    version: int
    updated_at: Timestamp
    value: Any = Field(description='The record\'s JSON value (bytes as {"$bytes": hex}).')


class RecordWritten(Out):
    id: str
    version: int


class RecordDeleted(Out):
    id: str
    deleted: bool


class AuditAppended(Out):
    id: str


class FileEntry(Out):
    path: str
    size: int


class FileWritten(Out):
    path: str
    size: int
    store: str


class FileDeleted(Out):
    path: str
    deleted: bool
