"""Tables of the embedded local key vault: keys, key versions and access grants.

All rows of all local vaults live here, keyed by vault id. Secret key material is stored only
encrypted under the master key (AES-256-GCM, associated data binding vault id, key name and
version); public keys are stored as DER for convenience. `local_keys.version` is the optimistic
concurrency counter; mutations also take a row lock (SELECT ... FOR UPDATE / BEGIN IMMEDIATE).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from keyshift.db.base import Base
from keyshift.db.types import UTCDateTime


class LocalKey(Base):
    """A key of a local vault: its type, current version, enabled flag and soft-delete state."""

    __tablename__ = "local_keys"
    __table_args__ = (UniqueConstraint("vault_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id"))
    name: Mapped[str] = mapped_column(String(200))
    key_type: Mapped[str] = mapped_column(String(10))  # RSA | AES
    size: Mapped[int] = mapped_column(Integer)  # bits
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    current_version: Mapped[str] = mapped_column(String(100))
    # Soft delete: set when deleted; purge is allowed from purge_after (purge protection).
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purge_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class LocalKeyVersion(Base):
    """One version of a local key. `material` is AES-256-GCM ciphertext under the master key."""

    __tablename__ = "local_key_versions"
    __table_args__ = (UniqueConstraint("key_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("local_keys.id"))
    version: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    material: Mapped[bytes] = mapped_column(LargeBinary)
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)  # DER SubjectPublicKeyInfo (RSA)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LocalKeyGrant(Base):
    """identity -> permissions (subset of get, wrapKey, unwrapKey) on one local key."""

    __tablename__ = "local_key_grants"
    __table_args__ = (UniqueConstraint("key_id", "identity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("local_keys.id"))
    identity: Mapped[str] = mapped_column(String(200))
    permissions: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
