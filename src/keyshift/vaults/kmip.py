"""`kmip`: AES-256 KEKs on a KMIP server (PyKMIP server in tests), via PyKMIP's client over mutual TLS.

Config: ``{"host", "port", "cert", "key", "ca", "timeout"}`` — paths of the client certificate, its
private key and the CA that signed the server certificate. The files are read when the connection
opens; Keyshift stores only their paths.

Keys are named by KMIP unique identifier or by KMIP Name attribute. A name may carry several
objects (each `rotate` creates a new object with the same Name); the version of a key is the
object's unique identifier, the current version the newest (highest numeric id, else the latest
Initial Date).

Wrap envelope (the KMIP server offers AES-CBC with padding but no usable AEAD):
``0x01 | IV (16) | len(C) (2, big endian) | C | T (32)`` where ``C = server.Encrypt(K, AES-CBC-PKCS5,
IV, DEK)`` with a fresh random IV and ``T = HMAC-SHA256(Km, "keyshift-kmip-wrap-v1" | uid | name |
IV | C | context)``. The MAC key ``Km = SHA-256(server.Encrypt(K, AES-CBC, IV=0^16, LABEL))`` is derived
by the server from the same KEK: CBC encryption of a fixed-length constant under a fixed IV is a
PRF of K (CBC-MAC on fixed-length input), so Km is bound to the KEK, never leaves the process, and
whoever cannot use K on the server cannot forge T. Unwrap checks T (constant-time) before asking
the server to decrypt; any mismatch — a tampered envelope, another key, another context — is one
opaque UnwrapError. Km is cached in memory per key object for `MAC_KEY_TTL` seconds; every wrap and
unwrap still calls the server, so revocation is enforced on each call.
A wrap is one Encrypt round trip (name -> current version is cached for NAME_TTL seconds), an
unwrap one Decrypt; the server enforces the state and a refusal is turned into the typed error
by reading the object's attributes.

States: Pre-Active / Deactivated (revoked) -> KeyDisabledError; Compromised -> KeyDeletedError;
destroyed objects are gone -> KeyNotFoundError. Access is the TLS client identity's (the server's
operation policy); Keyshift identities are not KMIP clients, so grants are unsupported and
`check_access` reports what the client may do with the key from its state and usage mask.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from keyshift.errors import AlreadyExistsError, UsageError
from keyshift.vaults import kmip_envelope as env
from keyshift.vaults.base import (
    KeyInfo,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    KeyVersionInfo,
    Permission,
    UnwrapError,
    VaultInfo,
    WrappedKey,
)
from keyshift.vaults.external import canonical_context, check_dek, declared_info, unsupported
from keyshift.vaults.kmip_connection import KmipConnection, uid_order
from keyshift.vaults.kmip_envelope import ALGORITHM, KIND, validate_config  # noqa: F401 - registry uses validate_config

if TYPE_CHECKING:
    from keyshift.db.models import VaultRecord
    from keyshift.runtime import Runtime


class KmipVault(KmipConnection):
    """KeyVault + KeyManager (where KMIP allows) over one PyKMIP client connection."""

    kind = KIND

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        soft_delete_days: int | None = None,
        purge_protection: bool = False,
    ) -> None:
        super().__init__(name, config)
        self.soft_delete_days = soft_delete_days
        self.purge_protection = purge_protection

    # -- KeyVault ---------------------------------------------------------------------------------
    def info(self) -> VaultInfo:
        def probe() -> str:
            self._run("vault", lambda c: c.locate(maximum_items=1))
            return f"KMIP server {self.config['host']}:{self.config['port']} reachable"

        return declared_info(
            self.name,
            KIND,
            self.config,
            self.soft_delete_days,
            self.purge_protection,
            symmetric_only=True,
            native_aes=True,
            probe=probe,
        )

    def describe(self, key: KeyRef) -> KeyInfo:
        from kmip import enums

        def go(client: Any) -> KeyInfo:
            versions = self._versions(client, key.name)
            current = self._current(versions)
            infos = []
            for uid in sorted(versions, key=uid_order):
                a = versions[uid]
                created = a.get("Initial Date")
                infos.append(
                    KeyVersionInfo(
                        version=uid,
                        enabled=a.get("State") == enums.State.ACTIVE,
                        created_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
                    )
                )
            cur = versions[current]
            return KeyInfo(
                ref=KeyRef(self.name, key.name, current),
                key_type=KeyType.AES,
                size=int(cur.get("Cryptographic Length") or 0),
                enabled=cur.get("State") == enums.State.ACTIVE,
                current_version=current,
                versions=tuple(infos),
            )

        return self._run(f"key {key}", go)

    def wrap(
        self, key: KeyRef, dek: bytes, *, identity: str, context: Mapping[str, str] | None = None
    ) -> WrappedKey:
        """One Encrypt round trip (the server enforces the key state; its refusal is typed here)."""
        from kmip.pie.exceptions import KmipOperationFailure

        dek = check_dek(dek)
        ctx = canonical_context(context)

        def go(client: Any) -> WrappedKey:
            uid = key.version or self._current_uid(client, key.name)
            ref = KeyRef(self.name, key.name, uid)
            iv = os.urandom(16)
            try:
                ct, _ = client.encrypt(
                    dek, uid=uid, cryptographic_parameters=env.cbc_params(), iv_counter_nonce=iv
                )
                mac_key = self._mac_key(client, uid)
            except KmipOperationFailure as exc:
                raise self._refused(client, ref, exc) from None
            ct = bytes(ct)
            tag = env.tag(mac_key, uid, key.name, iv, ct, ctx)
            blob = env.seal(iv, ct, tag)
            return WrappedKey(key=ref, algorithm=ALGORITHM, ciphertext=blob, meta={"envelope": "1"})

        return self._run(f"key {key}", go)

    def unwrap(
        self, wrapped: WrappedKey, *, identity: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Check the tag, then one Decrypt round trip (the server enforces the key state)."""
        from kmip.pie.exceptions import KmipOperationFailure

        if wrapped.algorithm != ALGORITHM or wrapped.key.version is None:
            raise UnwrapError("wrapped key was not made by a kmip vault")
        iv, ct, tag = env.parse(bytes(wrapped.ciphertext))
        ctx = canonical_context(context)
        uid = wrapped.key.version

        def go(client: Any) -> bytes:
            try:
                mac_key = self._mac_key(client, uid)
            except KmipOperationFailure as exc:
                raise self._refused(client, wrapped.key, exc) from None
            expected = env.tag(mac_key, uid, wrapped.key.name, iv, ct, ctx)
            if not hmac.compare_digest(expected, tag):
                raise UnwrapError("wrapped key failed to unwrap")
            try:
                plain = client.decrypt(
                    ct, uid=uid, cryptographic_parameters=env.cbc_params(), iv_counter_nonce=iv
                )
            except KmipOperationFailure as exc:
                raise self._refused(client, wrapped.key, exc) from None
            return bytes(plain)

        return self._run(f"key {wrapped.key}", go)

    def check_access(self, key: KeyRef, identity: str) -> frozenset[Permission]:
        from kmip import enums

        def go(client: Any) -> frozenset[Permission]:
            _, attrs = self._resolve(client, key)
            perms = {Permission.GET}
            if attrs.get("State") == enums.State.ACTIVE:
                mask = int(attrs.get("Cryptographic Usage Mask") or 0)
                if mask & enums.CryptographicUsageMask.ENCRYPT.value:
                    perms.add(Permission.WRAP)
                if mask & enums.CryptographicUsageMask.DECRYPT.value:
                    perms.add(Permission.UNWRAP)
            return frozenset(perms)

        return self._run(f"key {key}", go)

    # -- KeyManager ---------------------------------------------------------------------------------
    def _create(self, client: Any, name: str) -> str:
        from kmip import enums

        uid = client.create(
            enums.CryptographicAlgorithm.AES,
            256,
            name=name,
            cryptographic_usage_mask=[
                enums.CryptographicUsageMask.ENCRYPT,
                enums.CryptographicUsageMask.DECRYPT,
            ],
        )
        client.activate(uid)
        return str(uid)

    def create_key(
        self,
        name: str,
        key_type: KeyType,
        size: int,
        *,
        not_before: datetime | None = None,
        expires: datetime | None = None,
    ) -> KeyInfo:
        if key_type != KeyType.AES or size != 256:
            raise unsupported(KIND, f"{key_type} {size} keys", "Keyshift uses AES-256 keys on KMIP servers")
        if not_before is not None or expires is not None:
            raise unsupported(KIND, "not-before/expiry dates")
        if name.isdigit():
            raise UsageError("a kmip key name must not look like a unique identifier (all digits)")

        def go(client: Any) -> None:
            try:
                self._versions(client, name)
            except KeyNotFoundError:
                self._create(client, name)
            else:
                raise AlreadyExistsError(
                    f"key {name!r} already exists in vault {self.name}", code="key_exists"
                )

        self._run(f"key {name}", go)
        self._names.pop(name, None)
        return self.describe(KeyRef(self.name, name))

    def rotate_key(self, name: str) -> KeyInfo:
        def go(client: Any) -> None:
            versions = self._versions(client, name)
            if list(versions) == [name]:
                raise unsupported(KIND, "rotating a key named by unique identifier", "name it by its Name")
            self._create(client, name)

        self._run(f"key {name}", go)
        self._names.pop(name, None)
        return self.describe(KeyRef(self.name, name))

    def set_enabled(self, name: str, enabled: bool, *, version: str | None = None) -> KeyInfo:
        from kmip import enums

        def go(client: Any) -> None:
            versions = self._versions(client, name)
            uids = [version] if version else list(versions)
            for uid in uids:
                if uid not in versions:
                    raise KeyNotFoundError(f"key {self.name}/{name} has no version {uid!r}")
                state = versions[uid].get("State")
                if enabled and state == enums.State.PRE_ACTIVE:
                    client.activate(uid)
                elif enabled and state != enums.State.ACTIVE:
                    raise unsupported(
                        KIND,
                        "re-enabling a deactivated key",
                        "KMIP keys cannot return to Active once revoked",
                    )
                elif not enabled and state == enums.State.ACTIVE:
                    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
                self._mac_keys.pop(uid, None)

        self._run(f"key {name}", go)
        self._names.pop(name, None)
        return self.describe(KeyRef(self.name, name))

    def delete_key(self, name: str) -> KeyInfo:
        raise unsupported(KIND, "soft delete", "KMIP destroy is final; use purge")

    def recover_key(self, name: str) -> KeyInfo:
        raise unsupported(KIND, "recover", "a destroyed KMIP object cannot be recovered")

    def purge_key(self, name: str) -> None:
        from kmip import enums

        def go(client: Any) -> None:
            for uid, attrs in self._versions(client, name).items():
                if attrs.get("State") == enums.State.ACTIVE:
                    client.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
                client.destroy(uid)
                self._mac_keys.pop(uid, None)

        self._run(f"key {name}", go)
        self._names.pop(name, None)

    def grant(self, name: str, identity: str, permissions: frozenset[Permission]) -> None:
        raise unsupported(KIND, "grants", "access is the TLS client identity's, set by the server's policy")

    def revoke_grant(self, name: str, identity: str) -> None:
        raise unsupported(KIND, "grants", "access is the TLS client identity's, set by the server's policy")

    def list_keys(self) -> list[KeyInfo]:
        from kmip import enums
        from kmip.core.factories.attributes import AttributeFactory

        def go(client: Any) -> list[str]:
            uids = client.locate(
                attributes=[
                    AttributeFactory().create_attribute(
                        enums.AttributeType.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY
                    )
                ]
            )
            names = set()
            for uid in uids:
                names.add(self._attrs(client, str(uid)).get("Name") or str(uid))
            return sorted(names)

        return [self.describe(KeyRef(self.name, n)) for n in self._run("vault", go)]


def open_kmip_vault(rt: Runtime, record: VaultRecord) -> KmipVault:
    return KmipVault(
        record.name,
        record.config or {},
        soft_delete_days=record.soft_delete_days,
        purge_protection=bool(record.purge_protection),
    )
