"""Key management of the local vault (the `KeyManager` half of `LocalVault`).

Every mutation runs in one database transaction that first locks the key row (SELECT ... FOR
UPDATE on PostgreSQL; SQLite transactions begin IMMEDIATE), and writes its admin audit record in
that same transaction. Refusals are audited too (record_failure) and leave state unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from keyshift.control import audit_trail
from keyshift.db.models import LocalKey, LocalKeyGrant, LocalKeyVersion, VaultRecord
from keyshift.db.types import new_id
from keyshift.errors import AlreadyExistsError, ConflictError, KeyshiftError, NotFoundError, UsageError
from keyshift.vaults.base import (
    KeyInfo,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    KeyVersionInfo,
    Permission,
)
from keyshift.vaults.local_crypto import generate, material_ad, rsa_secret, validate_type_size

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from keyshift.runtime import Runtime
    from keyshift.vaults.master_key import MasterKey

T = TypeVar("T")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}$")
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


class LocalKeyAdmin:
    """Mixin: needs `rt`, `id`, `name`, `tenant_id`, `master` and `_cache` from LocalVault."""

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

    # -- KeyManager ----------------------------------------------------------------------------
    def create_key(
        self,
        name: str,
        key_type: KeyType | str,
        size: int,
        *,
        not_before: datetime | None = None,
        expires: datetime | None = None,
    ) -> KeyInfo:
        try:
            kt = validate_type_size(key_type, size)
            check_key_name(name)
            check_window(not_before, expires)
        except KeyshiftError as exc:
            self._refused("key.create", name, exc, key_type=str(key_type), size=size)
            raise
        secret, public = generate(kt, size)
        return self._create("key.create", name, kt, size, secret, public, not_before, expires)

    def import_rsa_key(
        self,
        name: str,
        private_key: rsa.RSAPrivateKey,
        *,
        not_before: datetime | None = None,
        expires: datetime | None = None,
    ) -> KeyInfo:
        from cryptography.hazmat.primitives.asymmetric import rsa as _rsa

        try:
            if not isinstance(private_key, _rsa.RSAPrivateKey):
                raise UsageError("only RSA private keys can be imported")
            size = private_key.key_size
            validate_type_size(KeyType.RSA, size)
        except KeyshiftError as exc:
            self._refused("key.import", name, exc)
            raise
        secret, public = rsa_secret(private_key)
        return self._create("key.import", name, KeyType.RSA, size, secret, public, not_before, expires)

    def _create(
        self,
        action: str,
        name: str,
        kt: KeyType,
        size: int,
        secret: bytes,
        public: bytes | None,
        not_before: datetime | None,
        expires: datetime | None,
    ) -> KeyInfo:
        def apply(session: Session) -> KeyInfo:
            check_key_name(name)
            check_window(not_before, expires)
            self._vault_row(session)
            existing = session.scalars(
                select(LocalKey).where(LocalKey.vault_id == self.id, LocalKey.name == name)
            ).first()
            if existing is not None:
                state = " (soft-deleted: recover or purge it)" if existing.deleted_at else ""
                raise AlreadyExistsError(f"key {self.name}/{name} already exists{state}")
            now = self.rt.clock.now()
            row = LocalKey(
                id=new_id("lk"),
                vault_id=self.id,
                name=name,
                key_type=kt.value,
                size=size,
                enabled=True,
                current_version="1",
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            self._add_version(session, row, "1", secret, public, not_before, expires)
            session.flush()
            return self._info(session, row)

        return self._mutate(action, name, apply, key_type=kt.value, size=size)

    def rotate_key(
        self, name: str, *, not_before: datetime | None = None, expires: datetime | None = None
    ) -> KeyInfo:
        def apply(session: Session) -> KeyInfo:
            check_window(not_before, expires)
            row = self._live(session, name)
            existing = session.scalars(
                select(LocalKeyVersion.version).where(LocalKeyVersion.key_id == row.id)
            ).all()
            version = str(max((int(v) for v in existing), default=0) + 1)
            secret, public = generate(KeyType(row.key_type), row.size)
            self._add_version(session, row, version, secret, public, not_before, expires)
            row.current_version = version
            row.updated_at = self.rt.clock.now()
            session.flush()
            return self._info(session, row)

        return self._mutate("key.rotate", name, apply)

    def set_enabled(self, name: str, enabled: bool, *, version: str | None = None) -> KeyInfo:
        def apply(session: Session) -> KeyInfo:
            row = self._live(session, name)
            if version is None:
                row.enabled = enabled
            else:
                self._version_row(session, row, version).enabled = enabled
            row.updated_at = self.rt.clock.now()  # bumps the row version too
            session.flush()
            return self._info(session, row)

        action = "key.enable" if enabled else "key.disable"
        return self._mutate(action, name, apply, version=version)

    def delete_key(self, name: str) -> KeyInfo:
        def apply(session: Session) -> KeyInfo:
            row = self._live(session, name)
            days = self._vault_row(session).soft_delete_days or 90
            now = self.rt.clock.now()
            row.deleted_at = now
            row.purge_after = now + timedelta(days=days)
            row.updated_at = now
            session.flush()
            return self._info(session, row)

        return self._mutate("key.delete", name, apply)

    def recover_key(self, name: str) -> KeyInfo:
        def apply(session: Session) -> KeyInfo:
            row = self._find(session, name, lock=True)
            if row.deleted_at is None:
                raise ConflictError(f"key {self.name}/{name} is not deleted", code="key_not_deleted")
            row.deleted_at = None
            row.purge_after = None
            row.updated_at = self.rt.clock.now()
            session.flush()
            return self._info(session, row)

        return self._mutate("key.recover", name, apply)

    def purge_key(self, name: str) -> None:
        def apply(session: Session) -> None:
            row = self._find(session, name, lock=True)
            if row.deleted_at is None:
                raise ConflictError(
                    f"key {self.name}/{name} must be deleted before it can be purged", code="key_not_deleted"
                )
            rec = self._vault_row(session)
            now = self.rt.clock.now()
            if rec.purge_protection and row.purge_after is not None and now < row.purge_after:
                raise ConflictError(
                    f"vault {self.name!r} has purge protection: key {name} cannot be purged before "
                    f"{row.purge_after.isoformat()}",
                    code="purge_protected",
                )
            self._erase(session, row)

        self._mutate("key.purge", name, apply)

    def _erase(self, session: Session, row: LocalKey) -> None:
        session.execute(delete(LocalKeyGrant).where(LocalKeyGrant.key_id == row.id))
        session.execute(delete(LocalKeyVersion).where(LocalKeyVersion.key_id == row.id))
        session.delete(row)
        session.flush()
        for k in [k for k in self._cache if k[0] == row.id]:
            del self._cache[k]

    def purge_due(self) -> list[str]:
        """Purge every soft-deleted key whose retention has ended (for the maintenance run)."""
        with self.rt.transaction() as session:
            now = self.rt.clock.now()
            names = session.scalars(
                select(LocalKey.name).where(
                    LocalKey.vault_id == self.id,
                    LocalKey.deleted_at.is_not(None),
                    LocalKey.purge_after <= now,
                )
            ).all()
        for name in names:
            self.purge_key(name)
        return list(names)

    def grant(self, name: str, identity: str, permissions: frozenset[Permission]) -> None:
        def apply(session: Session) -> None:
            check_identity(identity)
            try:
                perms = sorted(Permission(p).value for p in permissions)
            except ValueError:
                raise UsageError("unknown permission; expected any of get, wrapKey, unwrapKey") from None
            if not perms:
                raise UsageError("no permissions given")
            row = self._live(session, name)
            g = session.scalars(
                select(LocalKeyGrant).where(
                    LocalKeyGrant.key_id == row.id, LocalKeyGrant.identity == identity
                )
            ).first()
            if g is None:
                session.add(
                    LocalKeyGrant(
                        key_id=row.id, identity=identity, permissions=perms, created_at=self.rt.clock.now()
                    )
                )
            else:
                g.permissions = perms
            row.updated_at = self.rt.clock.now()
            session.flush()

        self._mutate("key.grant", name, apply, identity=identity, permissions=sorted(map(str, permissions)))

    def revoke_grant(self, name: str, identity: str) -> None:
        def apply(session: Session) -> None:
            row = self._find(session, name, lock=True)
            done = session.execute(
                delete(LocalKeyGrant).where(
                    LocalKeyGrant.key_id == row.id, LocalKeyGrant.identity == identity
                )
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFoundError(
                    f"identity {identity!r} holds no grant on key {self.name}/{name}", code="grant_not_found"
                )
            row.updated_at = self.rt.clock.now()
            session.flush()

        self._mutate("key.revoke_grant", name, apply, identity=identity)
