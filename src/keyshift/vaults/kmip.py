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

import contextlib
import hashlib
import hmac
import ipaddress
import os
import struct
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from keyshift.errors import AlreadyExistsError, KeyshiftError, UsageError, VaultUnavailableError
from keyshift.vaults.base import (
    AccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
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

if TYPE_CHECKING:
    from keyshift.db.models import VaultRecord
    from keyshift.runtime import Runtime

KIND = "kmip"
ALGORITHM = "kmip:AES-CBC+HMAC-SHA256"
ENVELOPE_VERSION = 1
MAC_LABEL = b"keyshift-kmip-mac-key-v1".ljust(32, b"\x00")
MAC_KEY_TTL = 300.0
NAME_TTL = 2.0  # how long a name -> current version resolution is reused (rotation shows up after it)
MAX_ENVELOPE = 1024
T = TypeVar("T")


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(raw) - {"host", "port", "cert", "key", "ca", "timeout"}
    if extra:
        raise UsageError(f"kmip vault: unknown settings {sorted(extra)}")
    host, port = raw.get("host"), raw.get("port")
    if not isinstance(host, str) or not host or len(host) > 253 or any(c.isspace() for c in host):
        raise UsageError("kmip vault: --host is required")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise UsageError("kmip vault: --port must be 1..65535")
    out: dict[str, Any] = {"host": host, "port": port}
    for field in ("cert", "key", "ca"):
        value = raw.get(field)
        if not isinstance(value, str) or not os.path.isabs(value):
            raise UsageError(f"kmip vault: --{field} must be an absolute file path")
        out[field] = value
    timeout = raw.get("timeout", 10.0)
    if not isinstance(timeout, int | float) or not 0.1 <= float(timeout) <= 300:
        raise UsageError("kmip vault: timeout must be 0.1..300 seconds")
    out["timeout"] = float(timeout)
    return out


def _uid_order(uid: str) -> tuple[int, int, str]:
    return (1, int(uid), "") if uid.isdigit() else (0, 0, uid)


class KmipVault:
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
        self.name = name
        self.config = validate_config(config)
        self.soft_delete_days = soft_delete_days
        self.purge_protection = purge_protection
        self._client: Any = None
        self._lock = threading.RLock()
        self._mac_keys: dict[str, tuple[float, bytes]] = {}
        self._names: dict[str, tuple[float, str]] = {}

    # -- connection -------------------------------------------------------------------------------
    def _connect(self) -> Any:
        # PyKMIP logs connection failures at ERROR with no handler configured, which Python's
        # last-resort handler prints on stderr; keep them out of CLI output (applications that
        # configure logging still receive them through propagation).
        _quiet_pykmip()
        try:
            from kmip.pie.client import ProxyKmipClient
        except ImportError:
            raise VaultUnavailableError("PyKMIP is not installed (extra 'kmip')") from None
        for field in ("cert", "key", "ca"):
            if not os.access(self.config[field], os.R_OK):
                raise VaultUnavailableError(
                    f"kmip vault {self.name}: cannot read the {field} file {self.config[field]}"
                )
        client = ProxyKmipClient(
            hostname=self.config["host"],
            port=self.config["port"],
            cert=self.config["cert"],
            key=self.config["key"],
            ca=self.config["ca"],
            config_file=os.devnull,
        )
        client.proxy.timeout = self.config["timeout"]
        try:
            with warnings.catch_warnings():
                # PyKMIP builds ssl.SSLContext(PROTOCOL_TLS), deprecated but still verifying.
                warnings.simplefilter("ignore", DeprecationWarning)
                client.open()
        except Exception as exc:
            raise VaultUnavailableError(
                f"kmip vault {self.name} unreachable ({type(exc).__name__})"
            ) from None
        try:
            _check_server_name(client.proxy.socket.getpeercert(), self.config["host"])
        except VaultUnavailableError:
            with contextlib.suppress(Exception):
                client.close()
            raise
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):  # already gone
                    self._client.close()
                self._client = None

    def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        """fn(client) under the lock; one reconnect on a dropped connection; typed errors."""
        from kmip.pie.exceptions import KmipOperationFailure

        for attempt in (0, 1):
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
                try:
                    return fn(self._client)
                except KeyshiftError:
                    raise
                except KmipOperationFailure as exc:
                    raise _map_failure(exc, what) from None
                except (OSError, EOFError, ValueError, AttributeError) as exc:
                    # socket closed by the server (idle timeout), TLS errors, truncated responses
                    self.close()
                    if attempt:
                        raise VaultUnavailableError(
                            f"kmip vault {self.name}: connection failed ({type(exc).__name__})"
                        ) from None
                except Exception as exc:
                    self.close()
                    raise VaultUnavailableError(
                        f"kmip vault {self.name}: request failed ({type(exc).__name__})"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- objects ----------------------------------------------------------------------------------
    @staticmethod
    def _attrs(client: Any, uid: str) -> dict[str, Any]:
        names = [
            "State",
            "Name",
            "Cryptographic Length",
            "Cryptographic Algorithm",
            "Initial Date",
            "Cryptographic Usage Mask",
            "Object Type",
        ]
        _, attrs = client.get_attributes(uid, names)
        out: dict[str, Any] = {}
        for a in attrs:
            key = a.attribute_name.value
            value = a.attribute_value
            if key == "Name":
                out.setdefault("Name", value.name_value.value)
            elif hasattr(value, "value"):
                out[key] = value.value
        return out

    def _versions(self, client: Any, name: str) -> dict[str, dict[str, Any]]:
        """uid -> attributes for every object named `name` (or the object whose uid is `name`)."""
        from kmip import enums
        from kmip.core.factories.attributes import AttributeFactory
        from kmip.pie.exceptions import KmipOperationFailure

        if not name or len(name) > 300:
            raise UsageError("kmip key name must be 1..300 characters")
        try:
            attrs = self._attrs(client, name)
        except KmipOperationFailure as exc:
            if exc.reason != enums.ResultReason.ITEM_NOT_FOUND:
                raise
        else:
            return {name: attrs}
        uids = client.locate(attributes=[AttributeFactory().create_attribute(enums.AttributeType.NAME, name)])
        out: dict[str, dict[str, Any]] = {}
        for uid in uids:
            try:
                out[str(uid)] = self._attrs(client, str(uid))
            except KmipOperationFailure as exc:
                if exc.reason != enums.ResultReason.ITEM_NOT_FOUND:
                    raise
        if not out:
            raise KeyNotFoundError(f"key {self.name}/{name} not found")
        return out

    @staticmethod
    def _current(versions: Mapping[str, Mapping[str, Any]]) -> str:
        return max(versions, key=lambda u: (_uid_order(u), versions[u].get("Initial Date") or 0))

    def _resolve(self, client: Any, key: KeyRef) -> tuple[str, dict[str, Any]]:
        """The concrete uid to use (and its attributes). An explicit version is trusted as a uid."""
        from kmip import enums
        from kmip.pie.exceptions import KmipOperationFailure

        if key.version is not None:
            try:
                return key.version, self._attrs(client, key.version)
            except KmipOperationFailure as exc:
                if exc.reason == enums.ResultReason.ITEM_NOT_FOUND:
                    raise KeyNotFoundError(f"key {key} not found") from None
                raise
        versions = self._versions(client, key.name)
        uid = self._current(versions)
        return uid, versions[uid]

    def _state_check(self, key: KeyRef, attrs: Mapping[str, Any]) -> None:
        from kmip import enums

        state = attrs.get("State")
        if state == enums.State.ACTIVE:
            return
        if state in (enums.State.COMPROMISED, enums.State.DESTROYED, enums.State.DESTROYED_COMPROMISED):
            raise KeyDeletedError(f"key {key} is {str(getattr(state, 'name', state)).lower()}")
        raise KeyDisabledError(f"key {key} is not active ({str(getattr(state, 'name', state)).lower()})")

    # -- server-side crypto -----------------------------------------------------------------------
    @staticmethod
    def _params() -> dict[str, Any]:
        from kmip import enums

        return {
            "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
            "block_cipher_mode": enums.BlockCipherMode.CBC,
            "padding_method": enums.PaddingMethod.PKCS5,
        }

    def _mac_key(self, client: Any, uid: str) -> bytes:
        cached = self._mac_keys.get(uid)
        now = time.monotonic()
        if cached is not None and now - cached[0] < MAC_KEY_TTL:
            return cached[1]
        block, _ = client.encrypt(
            MAC_LABEL, uid=uid, cryptographic_parameters=self._params(), iv_counter_nonce=b"\x00" * 16
        )
        key = hashlib.sha256(b"keyshift-kmip-mac|" + bytes(block)).digest()
        self._mac_keys[uid] = (now, key)
        return key

    @staticmethod
    def _tag(mac_key: bytes, uid: str, name: str, iv: bytes, ct: bytes, context: bytes) -> bytes:
        msg = b"keyshift-kmip-wrap-v1"
        for part in (uid.encode(), name.encode(), iv, ct, context):
            msg += struct.pack(">I", len(part)) + part
        return hmac.new(mac_key, msg, hashlib.sha256).digest()

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
            probe=probe,
        )

    def describe(self, key: KeyRef) -> KeyInfo:
        from kmip import enums

        def go(client: Any) -> KeyInfo:
            versions = self._versions(client, key.name)
            current = self._current(versions)
            infos = []
            for uid in sorted(versions, key=_uid_order):
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

    def _current_uid(self, client: Any, name: str) -> str:
        """The uid a name resolves to now (cached for NAME_TTL seconds: one Locate per name)."""
        cached = self._names.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < NAME_TTL:
            return cached[1]
        versions = self._versions(client, name)
        uid = self._current(versions)
        self._names[name] = (now, uid)
        return uid

    def _refused(self, client: Any, ref: KeyRef, exc: Any) -> KeyshiftError:
        """Why the server refused an operation on `ref`: look at the object's state for a typed error."""
        from kmip import enums
        from kmip.pie.exceptions import KmipOperationFailure

        self._names.pop(ref.name, None)
        if getattr(exc, "reason", None) == enums.ResultReason.ITEM_NOT_FOUND:
            self._mac_keys.pop(str(ref.version), None)
            return KeyNotFoundError(f"key {ref} not found")
        try:
            attrs = self._attrs(client, str(ref.version))
        except KmipOperationFailure as again:
            return _map_failure(again, f"key {ref}")
        try:
            self._state_check(ref, attrs)
        except KeyshiftError as typed:
            return typed
        return _map_failure(exc, f"key {ref}")

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
                    dek, uid=uid, cryptographic_parameters=self._params(), iv_counter_nonce=iv
                )
                mac_key = self._mac_key(client, uid)
            except KmipOperationFailure as exc:
                raise self._refused(client, ref, exc) from None
            ct = bytes(ct)
            tag = self._tag(mac_key, uid, key.name, iv, ct, ctx)
            blob = bytes([ENVELOPE_VERSION]) + iv + struct.pack(">H", len(ct)) + ct + tag
            return WrappedKey(key=ref, algorithm=ALGORITHM, ciphertext=blob, meta={"envelope": "1"})

        return self._run(f"key {key}", go)

    def unwrap(
        self, wrapped: WrappedKey, *, identity: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        """Check the tag, then one Decrypt round trip (the server enforces the key state)."""
        from kmip.pie.exceptions import KmipOperationFailure

        if wrapped.algorithm != ALGORITHM or wrapped.key.version is None:
            raise UnwrapError("wrapped key was not made by a kmip vault")
        iv, ct, tag = _parse(bytes(wrapped.ciphertext))
        ctx = canonical_context(context)
        uid = wrapped.key.version

        def go(client: Any) -> bytes:
            try:
                mac_key = self._mac_key(client, uid)
            except KmipOperationFailure as exc:
                raise self._refused(client, wrapped.key, exc) from None
            expected = self._tag(mac_key, uid, wrapped.key.name, iv, ct, ctx)
            if not hmac.compare_digest(expected, tag):
                raise UnwrapError("wrapped key failed to unwrap")
            try:
                plain = client.decrypt(
                    ct, uid=uid, cryptographic_parameters=self._params(), iv_counter_nonce=iv
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


def _quiet_pykmip() -> None:
    import logging

    logger = logging.getLogger("kmip")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _check_server_name(cert: Any, host: str) -> None:
    """PyKMIP verifies the server certificate against the CA but not the host name; do it here."""
    if not cert:
        raise VaultUnavailableError(f"KMIP server {host} presented no certificate")
    sans = cert.get("subjectAltName", ())
    try:
        wanted_ip: Any = ipaddress.ip_address(host)
    except ValueError:
        wanted_ip = None
    for kind, value in sans:
        if wanted_ip is not None and kind == "IP Address":
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(value.strip()) == wanted_ip:
                    return
        elif wanted_ip is None and kind == "DNS":
            pattern = value.lower()
            name = host.lower()
            if pattern == name or (
                pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]
            ):
                return
    raise VaultUnavailableError(f"KMIP server certificate does not name {host}")


def _parse(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """Check lengths against hard caps before reading anything."""
    if not 1 + 16 + 2 + 16 + 32 <= len(blob) <= MAX_ENVELOPE or blob[0] != ENVELOPE_VERSION:
        raise UnwrapError("wrapped key failed to unwrap")
    iv = blob[1:17]
    (n,) = struct.unpack(">H", blob[17:19])
    if n % 16 or 19 + n + 32 != len(blob):
        raise UnwrapError("wrapped key failed to unwrap")
    return iv, blob[19 : 19 + n], blob[19 + n :]


def _map_failure(exc: Any, what: str) -> KeyshiftError:
    from kmip import enums

    reason = getattr(exc, "reason", None)
    message = str(getattr(exc, "message", "") or "")
    if reason == enums.ResultReason.ITEM_NOT_FOUND:
        return KeyNotFoundError(f"{what} not found")
    if reason == enums.ResultReason.PERMISSION_DENIED:
        if "state" in message.lower():
            return KeyDisabledError(f"{what} is not active")
        return AccessDeniedError(f"the KMIP server denied access to {what}")
    if reason == enums.ResultReason.AUTHENTICATION_NOT_SUCCESSFUL:
        return AccessDeniedError(f"the KMIP server did not accept the client certificate for {what}")
    if reason == enums.ResultReason.CRYPTOGRAPHIC_FAILURE:
        return UnwrapError("wrapped key failed to unwrap")
    if reason in (enums.ResultReason.OPERATION_NOT_SUPPORTED, enums.ResultReason.FEATURE_NOT_SUPPORTED):
        return unsupported(KIND, f"this operation on {what}")
    if reason == enums.ResultReason.ILLEGAL_OPERATION:
        from keyshift.errors import ConflictError

        return ConflictError(f"the KMIP server refused this operation on {what}", code="illegal_operation")
    return VaultUnavailableError(f"KMIP server error for {what} ({getattr(reason, 'name', reason)})")


def open_kmip_vault(rt: Runtime, record: VaultRecord) -> KmipVault:
    return KmipVault(
        record.name,
        record.config or {},
        soft_delete_days=record.soft_delete_days,
        purge_protection=bool(record.purge_protection),
    )
