"""Key management of the local vault (the `KeyManager` half of `LocalVault`): create, import,
rotate, update a version's expiry, enable/disable, soft delete, recover, purge (with purge
protection), grant and revoke.
Each method runs inside `LocalKeyFrame._mutate` (one locked, audited transaction).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from keyshift.db.models import LocalKey, LocalKeyGrant, LocalKeyVersion
from keyshift.db.types import new_id
from keyshift.errors import AlreadyExistsError, ConflictError, KeyshiftError, NotFoundError, UsageError
from keyshift.timefmt import iso_z
from keyshift.vaults.base import KeyInfo, KeyType, Permission
from keyshift.vaults.local_crypto import generate, rsa_secret, validate_type_size
from keyshift.vaults.local_frame import LocalKeyFrame, check_identity, check_key_name, check_window

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class LocalKeyAdmin(LocalKeyFrame):
    """The KeyManager methods of LocalVault."""

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

    def update_expiry(self, name: str, expires: datetime | None, *, version: str | None = None) -> KeyInfo:
        """Set (extend, shorten) or clear (`None`) the expiry of one version (default: the current
        one), as a vault admin can; refused on a deleted key. Audited with the previous value."""
        change: dict[str, str | None] = {}

        def apply(session: Session) -> KeyInfo:
            check_window(None, expires)
            row = self._live(session, name)
            v = self._version_row(session, row, version or row.current_version)
            if expires is not None and v.not_before is not None and expires <= _aware(v.not_before):
                raise UsageError("expires must be later than the version's not-before", code="invalid_window")
            change.update(
                version=v.version,
                previous=iso_z(_aware(v.expires)) if v.expires is not None else None,
                expires=iso_z(expires) if expires is not None else None,
            )
            v.expires = expires
            row.updated_at = self.rt.clock.now()  # bumps the row version too
            session.flush()
            return self._info(session, row)

        return self._mutate("key.update", name, apply, change=change)

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
                    f"{iso_z(row.purge_after)}",
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
