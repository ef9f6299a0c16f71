"""Control-plane tables: tenants, environments and their encryption binding, vault registry,
enterprise policies, legacy BYOK keys, DEKs and their wraps, the admin audit trail.

Every mutable row carries `version` (optimistic concurrency: SQLAlchemy's version_id_col), so two
processes that race a read-modify-write cannot both win.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from keyshift.db.base import Base
from keyshift.db.types import UTCDateTime


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    byok_feature: Mapped[bool] = mapped_column(Boolean, default=False)
    sql_restriction: Mapped[bool] = mapped_column(Boolean, default=False)
    # Operator's ticket reference recorded when the BYOK feature flag was turned off.
    byok_flag_ticket: Mapped[str | None] = mapped_column(String(200))
    byok_flag_removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The tenant's legacy BYOK vault (a platform-owned local vault), if any.
    byok_vault_id: Mapped[str | None] = mapped_column(ForeignKey("vaults.id"))
    final_byok_migration_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_key_change_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class VaultRecord(Base):
    """The vault registry: where KEKs live. Secrets are stored by reference only (env var / file)."""

    __tablename__ = "vaults"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # local | pkcs11 | kmip | aws-kms
    # platform (platform key / BYOK vaults) or customer (CMK vaults).
    owner: Mapped[str] = mapped_column(String(20), default="customer")
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    soft_delete_days: Mapped[int | None] = mapped_column(Integer)
    purge_protection: Mapped[bool] = mapped_column(Boolean, default=False)
    # active | scheduled_deletion | deleted
    state: Mapped[str] = mapped_column(String(30), default="active")
    delete_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class Policy(Base):
    """Enterprise policy (kind `encryption`): a key reference plus its own identity."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(20), default="encryption")
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id"))
    key_name: Mapped[str] = mapped_column(String(300))
    key_version: Mapped[str | None] = mapped_column(String(100))  # pinned version, else current
    identity: Mapped[str] = mapped_column(String(100), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="enabled")
    # healthy | warning | unhealthy | undetermined
    health: Mapped[str] = mapped_column(String(20), default="undetermined")
    health_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    health_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the key first failed a check (for the vault-unreachable grace period).
    unhealthy_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The key version DEKs are wrapped under; a newer current version means rotation is due.
    observed_key_version: Mapped[str | None] = mapped_column(String(100))
    # Automatic rotation period in days (control/lifecycle.py); None = off.
    rotation_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class Environment(Base):
    """An environment and its encryption binding (mode, managed_by, status, policy, key)."""

    __tablename__ = "environments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    region: Mapped[str] = mapped_column(String(50))
    type: Mapped[str] = mapped_column(String(20))  # production|sandbox|trial|teams|developer
    managed: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(20), default="enabled")  # enabled|disabled|locked|deleted
    state_reason: Mapped[str | None] = mapped_column(Text)
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delete_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    # {"records": "sql", "audit": "sql"|"document", "files": "sql"|"file_storage"}
    stores: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Encryption binding.
    enc_mode: Mapped[str] = mapped_column(String(20), default="platform")  # platform|byok|cmk
    enc_managed_by: Mapped[str] = mapped_column(String(40), default="platform")
    enc_status: Mapped[str] = mapped_column(String(20), default="encrypted")  # encrypted|failed|warning
    policy_id: Mapped[str | None] = mapped_column(ForeignKey("policies.id"), index=True)
    # The KEK currently wrapping this environment's DEKs.
    kek_vault_id: Mapped[str | None] = mapped_column(ForeignKey("vaults.id"))
    kek_key_name: Mapped[str | None] = mapped_column(String(300))
    kek_key_version: Mapped[str | None] = mapped_column(String(100))
    kek_identity: Mapped[str | None] = mapped_column(String(100))
    byok_key_id: Mapped[str | None] = mapped_column(String(40))
    linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    migrated_from_byok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Until when the pre-migration copy and BYOK key are retained for `env restore --before-migration`.
    restore_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class ByokKey(Base):
    """A legacy BYOK tenant key (RSA-2048), held in the tenant's BYOK vault."""

    __tablename__ = "byok_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(50))
    state: Mapped[str] = mapped_column(String(20), default="available")  # available|installing|active|deleted
    source: Mapped[str] = mapped_column(String(20))  # generated | imported
    vault_key_name: Mapped[str] = mapped_column(String(300))
    # SHA-256 of the DER public key: identifies "the same key" on re-import.
    fingerprint: Mapped[str] = mapped_column(String(64))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When `state` last changed (an `installing` key left behind by a crashed activation expires).
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class Dek(Base):
    """A data encryption key of one environment and store. Its bytes only ever exist wrapped."""

    __tablename__ = "deks"
    __table_args__ = (Index("ix_deks_env_store_state", "environment_id", "store", "state"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # hex of the 16-byte header id
    environment_id: Mapped[str] = mapped_column(ForeignKey("environments.id"))
    store: Mapped[str] = mapped_column(String(20))  # records|audit|files|search|lake|backup
    state: Mapped[str] = mapped_column(String(20), default="active")  # active|retired|destroyed
    encryptions: Mapped[int] = mapped_column(BigInteger, default=0)  # usage budget counter
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}


class DekWrap(Base):
    """One wrapping of a DEK under one KEK version.

    state: `current` (used to unwrap), `pending` (written by a migration, not yet cut over),
    `retained` (the pre-migration wrap, kept until `retain_until` for restore), `destroyed`.
    """

    __tablename__ = "dek_wraps"
    __table_args__ = (Index("ix_dek_wraps_dek_state", "dek_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dek_id: Mapped[str] = mapped_column(ForeignKey("deks.id"))
    vault_id: Mapped[str] = mapped_column(ForeignKey("vaults.id"))
    key_name: Mapped[str] = mapped_column(String(300))
    key_version: Mapped[str] = mapped_column(String(100))
    identity: Mapped[str | None] = mapped_column(String(100))
    algorithm: Mapped[str] = mapped_column(String(50))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(20), default="current")
    retain_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AdminAuditEvent(Base):
    """Append-only admin audit trail: who did what, to what, when, and how it ended."""

    __tablename__ = "admin_audit"
    __table_args__ = (Index("ix_admin_audit_tenant_at", "tenant_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    principal: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(200))
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(20))  # ok | error
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
