"""The embedded local vault: keys in the state database, sealed under the home's master key.

`LocalVault` implements `KeyVault` (this module: describe, wrap, unwrap, check_access) and
`KeyManager` (`local_admin.LocalKeyAdmin`: create, rotate, enable/disable, delete, recover, purge,
grant, revoke). Decrypted key objects are cached in memory for the life of the instance only;
every wrap/unwrap re-reads enabled, grant, validity window and deletion state from the database
in one query, so a revocation takes effect on the very next call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Select, and_, bindparam, select
from sqlalchemy.orm import Session

from keyshift.clock import utc
from keyshift.db.models import LocalKey, LocalKeyGrant, LocalKeyVersion, VaultRecord
from keyshift.errors import UsageError
from keyshift.vaults.base import (
    AccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyExpiredError,
    KeyInfo,
    KeyNotFoundError,
    KeyNotYetValidError,
    KeyRef,
    KeyType,
    Permission,
    UnwrapError,
    VaultInfo,
    WrappedKey,
)
from keyshift.vaults.local_admin import LocalKeyAdmin
from keyshift.vaults.local_crypto import LoadedKey, load_secret, material_ad, public_pem
from keyshift.vaults.master_key import MasterKey, load_master_key

if TYPE_CHECKING:
    from keyshift.runtime import Runtime

MASTER_KEY_EXTENSION = "vaults.local.master_key"


def _state_query(pinned: bool) -> Select:
    """The one query behind every wrap/unwrap: key, version and grant state, built once."""
    version_match = LocalKeyVersion.version == (bindparam("version") if pinned else LocalKey.current_version)
    return (
        select(
            LocalKey.id,
            LocalKey.key_type,
            LocalKey.size,
            LocalKey.enabled,
            LocalKey.deleted_at,
            LocalKeyVersion.version,
            LocalKeyVersion.enabled,
            LocalKeyVersion.not_before,
            LocalKeyVersion.expires,
            LocalKeyGrant.permissions,
            LocalKey.current_version,
        )
        .join(VaultRecord, VaultRecord.id == LocalKey.vault_id)
        .outerjoin(LocalKeyVersion, and_(LocalKeyVersion.key_id == LocalKey.id, version_match))
        .outerjoin(
            LocalKeyGrant,
            and_(LocalKeyGrant.key_id == LocalKey.id, LocalKeyGrant.identity == bindparam("identity")),
        )
        .where(
            LocalKey.vault_id == bindparam("vault_id"),
            LocalKey.name == bindparam("name"),
            VaultRecord.state != "deleted",
        )
    )


_STATE_PINNED = _state_query(pinned=True)
_STATE_CURRENT = _state_query(pinned=False)


def master_key_for(rt: Runtime) -> MasterKey:
    """The home's master key, loaded and verified once per runtime."""
    return rt.extension(MASTER_KEY_EXTENSION, lambda r: load_master_key(r.home.path))  # type: ignore[no-any-return]


def open_local_vault(rt: Runtime, record: VaultRecord) -> LocalVault:
    """Registry factory for kind `local`."""
    return LocalVault(rt, record)


class LocalVault(LocalKeyAdmin):
    kind = "local"
    # This adapter writes its own admin audit records inside each mutation's transaction.
    audits_key_admin = True

    def __init__(self, rt: Runtime, record: VaultRecord) -> None:
        self.rt = rt
        self.id = record.id
        self.name = record.name
        self.tenant_id = record.tenant_id
        # op -> number of calls on this instance (wrap/unwrap are counted, not audited).
        self.calls: Counter[str] = Counter()
        self._cache: dict[tuple[str, str], LoadedKey] = {}

    def __repr__(self) -> str:
        return f"LocalVault({self.name!r})"

    # -- helpers -------------------------------------------------------------------------------
    @property
    def master(self) -> MasterKey:
        return master_key_for(self.rt)

    def _ref(self, name: str, version: str | None = None) -> KeyRef:
        return KeyRef(self.name, name, version)

    def _check_ref(self, key: KeyRef) -> None:
        if not isinstance(key, KeyRef):
            raise UsageError("expected a KeyRef")
        if key.vault not in (self.name, self.id):
            raise UsageError(f"key {key} does not belong to vault {self.name!r}")

    def _loaded(self, key_id: str, name: str, version: str, kt: KeyType, size: int) -> LoadedKey:
        cached = self._cache.get((key_id, version))
        if cached is not None:
            return cached
        with self.rt.engine.connect() as conn:
            blob = conn.execute(
                select(LocalKeyVersion.material).where(
                    LocalKeyVersion.key_id == key_id, LocalKeyVersion.version == version
                )
            ).scalar()
        if blob is None:  # purged between the state check and this read
            raise KeyNotFoundError(f"key {self.name}/{name} not found")
        secret = self.master.open(blob, material_ad(self.id, name, version))
        loaded = load_secret(kt, size, secret)
        self._cache[(key_id, version)] = loaded
        return loaded

    def _usable(self, key: KeyRef, identity: str, needed: Permission) -> tuple[LoadedKey, str]:
        """Re-check every condition for using `key` now; return the key object and concrete version."""
        wanted = key.version
        stmt = _STATE_PINNED if wanted is not None else _STATE_CURRENT
        params = {"vault_id": self.id, "name": key.name, "identity": identity}
        if wanted is not None:
            params["version"] = wanted
        with self.rt.engine.connect() as conn:
            row = conn.execute(stmt, params).first()
        label = f"{self.name}/{key.name}"
        if row is None:
            raise KeyNotFoundError(f"key {label} not found")
        key_id, kt, size, key_enabled, deleted_at, version, v_enabled, not_before, expires, perms, current = (
            row
        )
        if needed.value not in (perms or ()):
            raise AccessDeniedError(f"identity {identity!r} does not hold {needed.value} on key {label}")
        if deleted_at is not None:
            raise KeyDeletedError(f"key {label} is deleted")
        if version is None:
            raise KeyNotFoundError(f"key {label} has no version {wanted!r}")
        if not key_enabled:
            raise KeyDisabledError(f"key {label} is disabled")
        if not v_enabled:
            raise KeyDisabledError(f"version {version} of key {label} is disabled")
        now = self.rt.clock.now()
        if not_before is not None and now < _aware(not_before):
            raise KeyNotYetValidError(f"version {version} of key {label} is not valid before {not_before}")
        # A version superseded by a rotation keeps unwrapping after its expiry (decrypt-only, as real
        # vaults retire old versions), so data under it can be rewrapped to the new one.
        retired = needed is Permission.UNWRAP and version != current
        if expires is not None and now >= _aware(expires) and not retired:
            raise KeyExpiredError(f"version {version} of key {label} expired at {expires}")
        return self._loaded(key_id, key.name, version, KeyType(kt), size), version

    # -- KeyVault ------------------------------------------------------------------------------
    def info(self) -> VaultInfo:
        with self.rt.transaction() as session:
            rec = session.get(VaultRecord, self.id)
            if rec is None or rec.state == "deleted":
                raise KeyNotFoundError(f"vault {self.name!r} no longer exists", code="vault_not_found")
            return VaultInfo(
                name=rec.name,
                kind=self.kind,
                soft_delete_days=rec.soft_delete_days,
                purge_protection=rec.purge_protection,
                symmetric_only=False,
                reachable=True,
                detail="embedded local vault",
            )

    def describe(self, key: KeyRef, *, identity: str | None = None) -> KeyInfo:
        """Key type, size, versions, state. With `identity`, that identity needs `get`."""
        self._check_ref(key)
        self.calls["describe"] += 1
        with self.rt.transaction() as session:
            row = self._find(session, key.name)
            if identity is not None:
                perms = self._grant_of(session, row, identity)
                if Permission.GET not in perms:
                    raise AccessDeniedError(
                        f"identity {identity!r} does not hold get on key {self.name}/{key.name}"
                    )
            return self._info(session, row)

    def wrap(
        self, key: KeyRef, dek: bytes, *, identity: str, context: Mapping[str, str] | None = None
    ) -> WrappedKey:
        self._check_ref(key)
        self.calls["wrap"] += 1
        loaded, version = self._usable(key, identity, Permission.WRAP)
        return WrappedKey(
            key=self._ref(key.name, version), algorithm=loaded.algorithm, ciphertext=loaded.wrap(dek)
        )

    def unwrap(
        self, wrapped: WrappedKey, *, identity: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        if not isinstance(wrapped, WrappedKey):
            raise UsageError("expected a WrappedKey")
        self._check_ref(wrapped.key)
        if wrapped.key.version is None:
            raise UsageError("a wrapped key must name the key version it was wrapped under")
        self.calls["unwrap"] += 1
        loaded, _ = self._usable(wrapped.key, identity, Permission.UNWRAP)
        if wrapped.algorithm != loaded.algorithm:
            raise UnwrapError("wrapped key could not be unwrapped")
        return loaded.unwrap(wrapped.ciphertext)

    def check_access(self, key: KeyRef, identity: str) -> frozenset[Permission]:
        self._check_ref(key)
        self.calls["check_access"] += 1
        with self.rt.transaction() as session:
            row = self._find(session, key.name)
            if row.deleted_at is not None:
                raise KeyDeletedError(f"key {self.name}/{key.name} is deleted")
            return self._grant_of(session, row, identity)

    def public_key_pem(self, name: str, version: str | None = None) -> bytes:
        """PEM SubjectPublicKeyInfo of an RSA key version (the current one by default)."""
        with self.rt.transaction() as session:
            row = self._find(session, name)
            v = self._version_row(session, row, version or row.current_version)
            if v.public_key is None:
                raise UsageError(f"key {self.name}/{name} is {row.key_type}; only RSA keys have a public key")
            return public_pem(v.public_key)

    def _grant_of(self, session: Session, row: LocalKey, identity: str) -> frozenset[Permission]:
        perms = session.scalars(
            select(LocalKeyGrant.permissions).where(
                LocalKeyGrant.key_id == row.id, LocalKeyGrant.identity == identity
            )
        ).first()
        return frozenset(Permission(p) for p in (perms or ()))


def _aware(dt: datetime) -> datetime:
    return utc(dt)
