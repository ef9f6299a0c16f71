"""`pkcs11`: KEKs in a PKCS#11 token (an HSM; SoftHSM2 in tests), via python-pkcs11.

Config: ``{"module": PATH, "token_label": L, "pin": {"env": VAR} | {"file": PATH}}``. The user PIN is
read from the referenced variable or file when a session is opened (and on reconnect), passed to
C_Login and not kept anywhere.

Keys are named by CKA_LABEL. Versions: a label may carry several key objects, told apart by CKA_ID;
the version string is the CKA_ID as text (Keyshift creates versions with IDs "1", "2", ...; a foreign
ID that is not printable text shows as ``hex:<hex>``). The current version is the highest ID
(decimal IDs compare as numbers).

Wrapping (keyshift.vaults.pkcs11_mech): AES keys use the token's RFC 5649 / RFC 3394 key wrap;
RSA keys use OAEP with SHA-256 when the token supports it, else SHA-1 (SoftHSM2 2.6), probed once
per adapter and recorded in WrappedKey.algorithm so unwrap uses the same.
PKCS#11 key wrap has no associated data, so the caller's context is not bound cryptographically
here; records stay bound to tenant/environment by the record cipher's associated data.

State: disabled = the key's CKA_WRAP/CKA_UNWRAP (AES) or CKA_ENCRYPT/CKA_DECRYPT/CKA_WRAP/CKA_UNWRAP
(RSA) set false. Validity dates are not supported: CKA_START_DATE/CKA_END_DATE are advisory in
PKCS#11 and SoftHSM2 cannot return them through python-pkcs11, so create_key refuses them.
Deleting a key destroys its objects (no soft delete on a token) -> KeyNotFoundError afterwards.
Access: PKCS#11 has no per-identity grants; access is the token's login. `check_access` reports the
permissions the configured login has on the key from its usage attributes; `grant` is unsupported.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from keyshift.errors import AlreadyExistsError, KeyshiftError, UsageError, VaultUnavailableError
from keyshift.extras import MissingExtraError
from keyshift.vaults import pkcs11_mech as mech
from keyshift.vaults.base import (
    KeyDisabledError,
    KeyInfo,
    KeyNotFoundError,
    KeyRef,
    KeyType,
    KeyVersionInfo,
    Permission,
    UnwrapError,
    VaultInfo,
    VaultLocalError,
    WrappedKey,
)
from keyshift.vaults.external import check_dek, declared_info, unsupported
from keyshift.vaults.pkcs11_mech import AES_ALGS, RSA_ALGS
from keyshift.vaults.secrets import SecretRef

if TYPE_CHECKING:
    from keyshift.db.models import VaultRecord
    from keyshift.runtime import Runtime

KIND = "pkcs11"
MAX_WRAPPED = 1024
T = TypeVar("T")


def validate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(raw) - {"module", "token_label", "pin"}
    if extra:
        raise UsageError(f"pkcs11 vault: unknown settings {sorted(extra)}")
    module, label = raw.get("module"), raw.get("token_label")
    if not isinstance(module, str) or not os.path.isabs(module):
        raise UsageError("pkcs11 vault: --module must be the absolute path of the PKCS#11 library")
    if not isinstance(label, str) or not 1 <= len(label) <= 32:
        raise UsageError("pkcs11 vault: --token-label must be 1..32 characters")
    pin = SecretRef.from_config(raw.get("pin"), what="PIN")
    return {"module": module, "token_label": label, "pin": pin.to_config()}


def version_of(obj_id: bytes) -> str:
    try:
        text = obj_id.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if text and text.isprintable() and not text.startswith("hex:") and " " not in text:
        return text
    return "hex:" + obj_id.hex()


def id_of(version: str) -> bytes:
    if version.startswith("hex:"):
        try:
            return bytes.fromhex(version[4:])
        except ValueError:
            raise UsageError(f"invalid pkcs11 key version {version!r}") from None
    return version.encode("ascii")


def _order(version: str) -> tuple[int, int, str]:
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


class Pkcs11Vault:
    """KeyVault + KeyManager over one PKCS#11 token session (serialised by a lock)."""

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
        self._pin = SecretRef.from_config(self.config["pin"], what="PIN")
        self._session: Any = None
        self._lock = threading.RLock()
        self._oaep: str | None = None
        self._aes: str | None = None

    # -- session ----------------------------------------------------------------------------------
    def _open(self) -> Any:
        """A logged-in session. What this process lacks (library, module, token config, PIN) is a
        VaultLocalError naming the fix; a token that does not answer is VaultUnavailableError."""
        try:
            import pkcs11
        except ImportError:
            # Local to this process (never changes shared state); the message names the extra.
            raise VaultLocalError(
                MissingExtraError("a pkcs11 vault", "hsm").message, code="vault_client_missing"
            ) from None
        module, label = self.config["module"], self.config["token_label"]
        try:
            lib = pkcs11.lib(module)
        except Exception:
            raise VaultLocalError(
                f"pkcs11 vault {self.name}: this process cannot load or initialise the PKCS#11 module "
                f"{module}; install the HSM client library there and check its configuration "
                "(for SoftHSM2: SOFTHSM2_CONF must name a readable config file)",
                code="vault_module_unavailable",
            ) from None
        try:
            token = lib.get_token(token_label=label)
        except pkcs11.NoSuchToken:
            raise VaultLocalError(
                f"pkcs11 vault {self.name}: no token labelled {label!r} is visible to this process; "
                "check the HSM client configuration of this process (for SoftHSM2: export "
                "SOFTHSM2_CONF naming the config file whose token directory holds the token)",
                code="vault_token_not_found",
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise VaultUnavailableError(
                f"pkcs11 vault {self.name}: token unavailable ({type(exc).__name__})"
            ) from None
        pin = self._pin.read()
        try:
            return token.open(rw=True, user_pin=pin)
        except pkcs11.UserAlreadyLoggedIn:
            # PKCS#11 login state is per process and token: another adapter of this process is
            # logged in already, and a new session shares that login.
            return token.open(rw=True)
        except (
            pkcs11.PinIncorrect,
            pkcs11.PinInvalid,
            pkcs11.PinLenRange,
            pkcs11.PinLocked,
            pkcs11.PinExpired,
        ) as exc:
            raise VaultLocalError(
                f"pkcs11 vault {self.name}: the token refused this process's login "
                f"({type(exc).__name__}); fix the PIN in {self._pin.describe()}",
                code="vault_login_failed",
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise VaultUnavailableError(
                f"pkcs11 vault {self.name}: cannot open a session ({type(exc).__name__})"
            ) from None

    @contextmanager
    def _use(self) -> Iterator[Any]:
        with self._lock:
            if self._session is None:
                self._session = self._open()
            yield self._session

    def _run(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run fn(session); on a lost session reopen once; map token errors to typed vault errors."""
        try:
            import pkcs11
        except ImportError:  # the 'hsm' extra is not installed: say which to install
            raise VaultUnavailableError(MissingExtraError("a pkcs11 vault", "hsm").message) from None

        lost = (
            pkcs11.SessionHandleInvalid,
            pkcs11.SessionClosed,
            pkcs11.DeviceRemoved,
            pkcs11.TokenNotPresent,
            pkcs11.UserNotLoggedIn,
        )
        for attempt in (0, 1):
            try:
                with self._use() as session:
                    return fn(session)
            except lost:
                self.close()
                if attempt:
                    raise VaultUnavailableError(f"pkcs11 vault {self.name}: session lost") from None
            except KeyshiftError:
                raise
            except pkcs11.PKCS11Error as exc:
                raise mech.map_error(exc, what) from None
            except Exception as exc:  # the client library itself failed in this process
                self.close()
                raise VaultLocalError(
                    f"pkcs11 vault {self.name}: the PKCS#11 client failed for {what} "
                    f"({type(exc).__name__}); check the module and python-pkcs11 versions",
                    code="vault_client_error",
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                with contextlib.suppress(Exception):  # already gone
                    self._session.close()
                self._session = None

    # -- objects ----------------------------------------------------------------------------------
    def _objects(self, session: Any, name: str) -> dict[str, dict[str, Any]]:
        """version -> {"type": KeyType, "secret"|"public"|"private": object} for label `name`."""
        from pkcs11 import Attribute, ObjectClass

        if not name or len(name) > 200:
            raise UsageError("pkcs11 key name must be 1..200 characters")
        out: dict[str, dict[str, Any]] = {}
        for obj in session.get_objects({Attribute.LABEL: name}):
            cls = obj[Attribute.CLASS]
            slot = {
                ObjectClass.SECRET_KEY: "secret",
                ObjectClass.PUBLIC_KEY: "public",
                ObjectClass.PRIVATE_KEY: "private",
            }.get(cls)
            if slot is None:
                continue
            version = version_of(bytes(obj[Attribute.ID] or b""))
            entry = out.setdefault(version, {})
            entry[slot] = obj
            entry["type"] = KeyType.AES if slot == "secret" else KeyType.RSA
        if not out:
            raise KeyNotFoundError(f"key {self.name}/{name} not found")
        return out

    def _pick(self, session: Any, ref: KeyRef) -> tuple[str, dict[str, Any]]:
        objs = self._objects(session, ref.name)
        version = ref.version or max(objs, key=_order)
        entry = objs.get(version)
        if entry is None:
            raise KeyNotFoundError(f"key {self.name}/{ref.name} has no version {version!r}")
        return version, entry

    @staticmethod
    def _flags(entry: Mapping[str, Any]) -> tuple[bool, bool]:
        """(can wrap, can unwrap) from the usage attributes."""
        from pkcs11 import Attribute

        if entry["type"] == KeyType.AES:
            s = entry["secret"]
            return mech.has(s, Attribute.WRAP), mech.has(s, Attribute.UNWRAP)
        pub, priv = entry.get("public"), entry.get("private")
        can_wrap = pub is not None and (mech.has(pub, Attribute.ENCRYPT) or mech.has(pub, Attribute.WRAP))
        can_unwrap = priv is not None and (
            mech.has(priv, Attribute.DECRYPT) or mech.has(priv, Attribute.UNWRAP)
        )
        return can_wrap, can_unwrap

    def _version_info(self, version: str, entry: Mapping[str, Any]) -> KeyVersionInfo:
        w, u = self._flags(entry)
        return KeyVersionInfo(version=version, enabled=w and u)

    def _size(self, entry: Mapping[str, Any]) -> int:
        obj: Any = entry.get("secret") or entry.get("public") or entry.get("private")
        return int(obj.key_length)

    # -- KeyVault ---------------------------------------------------------------------------------
    def info(self) -> VaultInfo:
        def probe() -> str:
            return self._run("vault", lambda s: f"token {s.token.label!r} reachable")

        return declared_info(
            self.name,
            KIND,
            self.config,
            self.soft_delete_days,
            self.purge_protection,
            symmetric_only=False,
            native_aes=True,
            probe=probe,
        )

    def describe(self, key: KeyRef) -> KeyInfo:
        def go(session: Any) -> KeyInfo:
            objs = self._objects(session, key.name)
            current = max(objs, key=_order)
            entry = objs[current]
            versions = tuple(self._version_info(v, objs[v]) for v in sorted(objs, key=_order))
            cur = next(v for v in versions if v.version == current)
            return KeyInfo(
                ref=KeyRef(self.name, key.name, current),
                key_type=entry["type"],
                size=self._size(entry),
                enabled=cur.enabled,
                current_version=current,
                versions=versions,
            )

        return self._run(f"key {key}", go)

    def wrap(
        self, key: KeyRef, dek: bytes, *, identity: str, context: Mapping[str, str] | None = None
    ) -> WrappedKey:
        dek = check_dek(dek)

        def go(session: Any) -> WrappedKey:
            version, entry = self._pick(session, key)
            ref = KeyRef(self.name, key.name, version)
            if not self._flags(entry)[0]:
                raise KeyDisabledError(f"key {ref} is disabled")
            if entry["type"] == KeyType.AES:
                if self._aes is None:
                    self._aes = mech.aes_algorithm(session)
                alg, blob = self._aes, mech.aes_wrap(session, entry["secret"], dek, self._aes)
            else:
                if self._oaep is None:  # the token's OAEP capability, probed once
                    self._oaep = mech.probe_oaep(session, entry["public"])
                alg, blob = self._oaep, mech.oaep_wrap(session, entry["public"], dek, self._oaep)
            return WrappedKey(key=ref, algorithm=alg, ciphertext=blob, meta={"mechanism": alg})

        return self._run(f"key {key}", go)

    def unwrap(
        self, wrapped: WrappedKey, *, identity: str, context: Mapping[str, str] | None = None
    ) -> bytes:
        if wrapped.key.version is None or wrapped.algorithm not in AES_ALGS + RSA_ALGS:
            raise UnwrapError("wrapped key was not made by a pkcs11 vault")
        if not 8 <= len(wrapped.ciphertext) <= MAX_WRAPPED:
            raise UnwrapError("wrapped key has an invalid length")

        def go(session: Any) -> bytes:
            _, entry = self._pick(session, wrapped.key)
            if not self._flags(entry)[1]:
                raise KeyDisabledError(f"key {wrapped.key} is disabled")
            is_aes = wrapped.algorithm in AES_ALGS
            if is_aes != (entry["type"] == KeyType.AES):
                raise UnwrapError("wrapped key failed to unwrap")
            if is_aes:
                return mech.aes_unwrap(entry["secret"], wrapped.ciphertext, wrapped.algorithm)
            return mech.oaep_unwrap(entry["private"], wrapped.ciphertext, wrapped.algorithm)

        return self._run(f"key {wrapped.key}", go)

    def check_access(self, key: KeyRef, identity: str) -> frozenset[Permission]:
        def go(session: Any) -> frozenset[Permission]:
            _, entry = self._pick(session, key)
            w, u = self._flags(entry)
            perms = {Permission.GET}
            if w:
                perms.add(Permission.WRAP)
            if u:
                perms.add(Permission.UNWRAP)
            return frozenset(perms)

        return self._run(f"key {key}", go)

    # -- KeyManager ---------------------------------------------------------------------------------
    def create_key(
        self,
        name: str,
        key_type: KeyType,
        size: int,
        *,
        not_before: datetime | None = None,
        expires: datetime | None = None,
    ) -> KeyInfo:
        _check_type(key_type, size)
        if not_before is not None or expires is not None:
            raise unsupported(KIND, "not-before/expiry dates", "PKCS#11 start/end dates are advisory")

        def go(session: Any) -> None:
            try:
                self._objects(session, name)
            except KeyNotFoundError:
                pass
            else:
                raise AlreadyExistsError(
                    f"key {name!r} already exists in vault {self.name}", code="key_exists"
                )
            self._generate(session, name, "1", key_type, size)

        self._run(f"key {name}", go)
        return self.describe(KeyRef(self.name, name))

    def _generate(
        self,
        session: Any,
        name: str,
        version: str,
        key_type: KeyType,
        size: int,
    ) -> None:
        from pkcs11 import Attribute, MechanismFlag
        from pkcs11 import KeyType as P11KeyType

        caps = MechanismFlag.WRAP | MechanismFlag.UNWRAP | MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
        if key_type == KeyType.AES:
            session.generate_key(
                P11KeyType.AES,
                size,
                label=name,
                id=id_of(version),
                store=True,
                capabilities=caps,
                template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
            )
        else:
            session.generate_keypair(
                P11KeyType.RSA,
                size,
                label=name,
                id=id_of(version),
                store=True,
                capabilities=caps,
                private_template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True},
            )

    def rotate_key(self, name: str) -> KeyInfo:
        def go(session: Any) -> None:
            objs = self._objects(session, name)
            current = max(objs, key=_order)
            nums = [int(v) for v in objs if v.isdigit()]
            entry = objs[current]
            self._generate(session, name, str(max(nums, default=0) + 1), entry["type"], self._size(entry))

        self._run(f"key {name}", go)
        return self.describe(KeyRef(self.name, name))

    def set_enabled(self, name: str, enabled: bool, *, version: str | None = None) -> KeyInfo:
        from pkcs11 import Attribute

        def go(session: Any) -> None:
            objs = self._objects(session, name)
            targets = [objs[version]] if version else list(objs.values())
            if version and version not in objs:
                raise KeyNotFoundError(f"key {self.name}/{name} has no version {version!r}")
            for entry in targets:
                if entry["type"] == KeyType.AES:
                    entry["secret"][Attribute.WRAP] = enabled
                    entry["secret"][Attribute.UNWRAP] = enabled
                else:
                    if entry.get("public") is not None:
                        entry["public"][Attribute.ENCRYPT] = enabled
                        entry["public"][Attribute.WRAP] = enabled
                    if entry.get("private") is not None:
                        entry["private"][Attribute.DECRYPT] = enabled
                        entry["private"][Attribute.UNWRAP] = enabled

        self._run(f"key {name}", go)
        return self.describe(KeyRef(self.name, name))

    def delete_key(self, name: str) -> KeyInfo:
        raise unsupported(
            KIND, "soft delete", "a token has no recycle bin; use purge to destroy the key objects"
        )

    def recover_key(self, name: str) -> KeyInfo:
        raise unsupported(KIND, "recover", "a destroyed token object cannot be recovered")

    def purge_key(self, name: str) -> None:
        def go(session: Any) -> None:
            for entry in self._objects(session, name).values():
                for slot in ("secret", "public", "private"):
                    if entry.get(slot) is not None:
                        entry[slot].destroy()

        self._run(f"key {name}", go)

    def grant(self, name: str, identity: str, permissions: frozenset[Permission]) -> None:
        raise unsupported(KIND, "grants", "access to a token is its login (PIN), not per identity")

    def revoke_grant(self, name: str, identity: str) -> None:
        raise unsupported(KIND, "grants", "access to a token is its login (PIN), not per identity")

    def list_keys(self) -> list[KeyInfo]:
        from pkcs11 import Attribute, ObjectClass

        def go(session: Any) -> list[str]:
            labels: set[str] = set()
            for cls in (ObjectClass.SECRET_KEY, ObjectClass.PRIVATE_KEY):
                for obj in session.get_objects({Attribute.CLASS: cls}):
                    label = obj[Attribute.LABEL]
                    if label:
                        labels.add(str(label))
            return sorted(labels)

        return [self.describe(KeyRef(self.name, n)) for n in self._run("vault", go)]


def _check_type(key_type: KeyType, size: int) -> None:
    if key_type == KeyType.AES and size != 256:
        raise UsageError("AES keys must be 256 bits")
    if key_type == KeyType.RSA and size not in (2048, 3072):
        raise UsageError("RSA keys must be 2048 or 3072 bits")


def open_pkcs11_vault(rt: Runtime, record: VaultRecord) -> Pkcs11Vault:
    return Pkcs11Vault(
        record.name,
        record.config or {},
        soft_delete_days=record.soft_delete_days,
        purge_protection=bool(record.purge_protection),
    )
