"""Shared core of local vault key management: input rules, row lookups, `KeyInfo` building, and
the audited mutation frame.

Every mutation runs in one database transaction that first locks the key row (SELECT ... FOR
UPDATE on PostgreSQL; SQLite transactions begin IMMEDIATE), and writes its admin audit record in
that same transaction. Refusals are audited too (record_failure) and leave state unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from keyshift.control import audit_trail
from keyshift.db.models import LocalKey, LocalKeyGrant, LocalKeyVersion, VaultRecord
from keyshift.errors import AlreadyExistsError, ConflictError, KeyshiftError, NotFoundError, UsageError
from keyshift.vaults.base import (
    KeyInfo,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    KeyVersionInfo,
    Permission,
)
from keyshift.vaults.local_crypto import material_ad

if TYPE_CHECKING:
    from keyshift.runtime import Runtime
    from keyshift.vaults.master_key import MasterKey

T = TypeVar("T")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}\Z")
IDENTITY_MAX = 200


def check_key_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(
            f"invalid key name {name!r}: 1-127 characters, letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_identity(identity: str) -> str:
    if (
        not isinstance(identity, str)
        or not identity.strip()
        or len(identity) > IDENTITY_MAX
        or any(ord(c) < 32 for c in identity)
    ):
        raise UsageError(f"invalid identity {identity!r}: 1-{IDENTITY_MAX} printable characters")
    return identity


def check_window(not_before: datetime | None, expires: datetime | None) -> None:
    for label, value in (("not-before", not_before), ("expires", expires)):
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise UsageError(f"{label} must be a timezone-aware datetime")
    if not_before is not None and expires is not None and expires <= not_before:
        raise UsageError("expires must be later than not-before")


class LocalKeyFrame:
    """Reading helpers and the audited mutation frame; needs `rt`, `id`, `name`, `tenant_id`,
    `master` and `_cache` from LocalVault."""

    rt: Runtime
    id: str
    name: str
    tenant_id: str | None
    _cache: dict[tuple[str, str], Any]

    @property
    def master(self) -> MasterKey:  # provided by LocalVault
        raise NotImplementedError

    # -- reading -----------------------------------------------------------------------------
    def _find(self, session: Session, name: str, *, lock: bool = False) -> LocalKey:
        stmt = (
            select(LocalKey)
            .join(VaultRecord, VaultRecord.id == LocalKey.vault_id)
            .where(LocalKey.vault_id == self.id, LocalKey.name == name, VaultRecord.state != "deleted")
        )
        if lock:
            stmt = stmt.with_for_update(of=LocalKey)
        row = session.scalars(stmt).first()
        if row is None:
            raise KeyNotFoundError(f"key {self.name}/{name} not found")
        return row

    def _version_row(self, session: Session, row: LocalKey, version: str) -> LocalKeyVersion:
        v = session.scalars(
            select(LocalKeyVersion).where(
                LocalKeyVersion.key_id == row.id, LocalKeyVersion.version == version
            )
        ).first()
        if v is None:
            raise KeyNotFoundError(f"key {self.name}/{row.name} has no version {version!r}")
        return v

    def _info(self, session: Session, row: LocalKey) -> KeyInfo:
        versions = session.scalars(
            select(LocalKeyVersion).where(LocalKeyVersion.key_id == row.id).order_by(LocalKeyVersion.id)
        ).all()
        return KeyInfo(
            ref=KeyRef(self.name, row.name, row.current_version),
            key_type=KeyType(row.key_type),
            size=row.size,
            enabled=row.enabled,
            current_version=row.current_version,
            versions=tuple(
                KeyVersionInfo(v.version, v.enabled, v.not_before, v.expires, v.created_at) for v in versions
            ),
            deleted=row.deleted_at is not None,
            purge_after=row.purge_after,
        )

    def list_keys(self) -> list[KeyInfo]:
        with self.rt.transaction() as session:
            rows = session.scalars(
                select(LocalKey).where(LocalKey.vault_id == self.id).order_by(LocalKey.name)
            ).all()
            return [self._info(session, r) for r in rows]

    def list_grants(self, name: str) -> dict[str, frozenset[Permission]]:
        with self.rt.transaction() as session:
            row = self._find(session, name)
            grants = session.scalars(
                select(LocalKeyGrant).where(LocalKeyGrant.key_id == row.id).order_by(LocalKeyGrant.identity)
            ).all()
            return {g.identity: frozenset(Permission(p) for p in g.permissions) for g in grants}

    # -- the mutation frame ------------------------------------------------------------------
    def _mutate(self, action: str, name: str, fn: Callable[[Session], T], **details: Any) -> T:
        target = f"{self.name}/{name}"
        try:
            with self.rt.transaction() as session:
                result = fn(session)
                audit_trail.record(
                    self.rt,
                    session,
                    action,
                    target_type="key",
                    target_id=target,
                    tenant_id=self.tenant_id,
                    details={"vault": self.name, "key": name, **details},
                )
            return result
        except DbIntegrityError:
            err: KeyshiftError = AlreadyExistsError(f"key {target} already exists")
        except StaleDataError:
            err = ConflictError(f"key {target} was changed concurrently; retry", code="concurrent_update")
        except KeyshiftError as exc:
            err = exc
        self._refused(action, name, err, **details)
        raise err

    def _refused(self, action: str, name: str, err: Exception, **details: Any) -> None:
        audit_trail.record_failure(
            self.rt,
            action,
            err,
            target_type="key",
            target_id=f"{self.name}/{name}"[:200],
            tenant_id=self.tenant_id,
            details={"vault": self.name, "key": str(name)[:200], **details},
        )

    def _live(self, session: Session, name: str) -> LocalKey:
        row = self._find(session, name, lock=True)
        if row.deleted_at is not None:
            raise ConflictError(f"key {self.name}/{name} is deleted; recover it first", code="key_deleted")
        return row

    def _vault_row(self, session: Session) -> VaultRecord:
        rec = session.get(VaultRecord, self.id)
        if rec is None or rec.state == "deleted":
            raise NotFoundError(f"vault {self.name!r} no longer exists", code="vault_not_found")
        return rec

    def _add_version(
        self,
        session: Session,
        row: LocalKey,
        version: str,
        secret: bytes,
        public: bytes | None,
        not_before: datetime | None,
        expires: datetime | None,
    ) -> None:
        session.add(
            LocalKeyVersion(
                key_id=row.id,
                version=version,
                enabled=True,
                not_before=not_before,
                expires=expires,
                material=self.master.seal(secret, material_ad(self.id, row.name, version)),
                public_key=public,
                created_at=self.rt.clock.now(),
            )
        )
