"""Tables of the extra storages: the blind search index, data lake exports and backups.

Nothing here holds plaintext: postings are (index, token, record id) where the token is a keyed HMAC
of a normalized word; lake and backup rows are metadata (ids, caller-chosen table names, sizes,
times, which key wrapped what). The Parquet files and backup archives live in file storage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keyshift.db.base import Base
from keyshift.db.types import UTCDateTime


class SearchIndex(Base):
    """One generation of a table's search index: its fields and the search DEK its tokens use.

    state: `building` (being filled by a rebuild job; writes already go to it), `active` (answers
    queries), `retired` (replaced; its postings are deleted).
    """

    __tablename__ = "search_indexes"
    __table_args__ = (
        UniqueConstraint("environment_id", "table_name", "generation"),
        Index("ix_search_indexes_env_table_state", "environment_id", "table_name", "state"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(40))
    table_name: Mapped[str] = mapped_column(String(128))
    generation: Mapped[int] = mapped_column(Integer)
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    dek_id: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(20))
    # The environment's KEK when the generation was started (a later swap replaces the search key).
    kek_vault_id: Mapped[str | None] = mapped_column(String(40))
    kek_key_name: Mapped[str | None] = mapped_column(String(300))
    job_id: Mapped[str | None] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SearchPosting(Base):
    """A blind token of one record in one index generation. 16 bytes of HMAC-SHA256."""

    __tablename__ = "search_postings"
    __table_args__ = (
        Index("ix_search_postings_index_record", "index_id", "record_id"),
        # On SQLite the key is the table (no second copy of every posting in a rowid table).
        {"sqlite_with_rowid": False},
    )

    index_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token: Mapped[bytes] = mapped_column(LargeBinary(16), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(512), primary_key=True)


class LakeExport(Base):
    """A Parquet export of a table (modular encryption), stored in file storage under `path`."""

    __tablename__ = "lake_exports"
    __table_args__ = (UniqueConstraint("environment_id", "path"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(40), index=True)
    table_name: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(1024))
    rows: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    dek_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Backup(Base):
    """An encrypted snapshot of one environment (archive in file storage). state: ready | purged."""

    __tablename__ = "backups"
    __table_args__ = (Index("ix_backups_env_created", "environment_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    environment_id: Mapped[str] = mapped_column(String(40))
    tenant_id: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    dek_id: Mapped[str] = mapped_column(String(32))
    # The environment's KEK when the backup was taken (informational; the DEK follows key changes).
    kek_vault_id: Mapped[str | None] = mapped_column(String(40))
    kek_key_name: Mapped[str | None] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
