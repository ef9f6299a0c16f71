"""Data-plane tables in the state database: encrypted record rows, and the SQL layout of audit
events and files used by legacy BYOK environments (everything inside the SQL store).

Nothing here holds plaintext: `value`, `payload` and chunk `data` are ciphertexts; the plaintext
metadata is limited to ids, the caller-chosen table/path names, sizes and timestamps.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from keyshift.db.base import Base
from keyshift.db.types import UTCDateTime


class DataRecord(Base):
    """One encrypted record. `version` starts at 1 and grows by one on every write (CAS)."""

    __tablename__ = "data_records"
    __table_args__ = (Index("ix_data_records_env_dek", "environment_id", "dek_id"),)

    environment_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    table_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(512), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    dek_id: Mapped[str] = mapped_column(String(32))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DataAuditRow(Base):
    """An audit event kept in the SQL layout (legacy BYOK). `seq` orders events of equal time."""

    __tablename__ = "data_audit"
    __table_args__ = (Index("ix_data_audit_env_at", "environment_id", "at", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    environment_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(40), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    dek_id: Mapped[str] = mapped_column(String(32))
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class DataFile(Base):
    """A file kept in the SQL layout: its ciphertext lives in `data_file_chunks` under `file_id`."""

    __tablename__ = "data_files"

    environment_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(40), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    dek_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DataFileChunk(Base):
    """One chunk of a file's ciphertext (SQL layout); chunks are read in `seq` order."""

    __tablename__ = "data_file_chunks"

    file_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
