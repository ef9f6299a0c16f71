"""One PyKMIP client connection for the `kmip` vault: mutual TLS with a host-name check, one
reconnect on a dropped connection, object lookup by unique identifier or Name, name -> current
version resolution (cached NAME_TTL seconds), the envelope's MAC key (cached MAC_KEY_TTL seconds)
and typed errors for server refusals. Calls are serialised by a lock.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from keyshift.errors import KeyshiftError, UsageError, VaultUnavailableError
from keyshift.extras import MissingExtraError
from keyshift.vaults import kmip_envelope as env
from keyshift.vaults.base import (
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyRef,
    VaultLocalError,
)

MAC_KEY_TTL = 300.0
NAME_TTL = 2.0  # how long a name -> current version resolution is reused (rotation shows up after it)
T = TypeVar("T")


def uid_order(uid: str) -> tuple[int, int, str]:
    return (1, int(uid), "") if uid.isdigit() else (0, 0, uid)


class KmipConnection:
    """The connection and object plumbing under KmipVault."""

    name: str

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name
        self.config = env.validate_config(config)
        self._client: Any = None
        self._lock = threading.RLock()
        self._mac_keys: dict[str, tuple[float, bytes]] = {}
        self._names: dict[str, tuple[float, str]] = {}

    # -- connection -------------------------------------------------------------------------------
    def _connect(self) -> Any:
        # PyKMIP logs connection failures at ERROR with no handler configured, which Python's
        # last-resort handler prints on stderr; keep them out of CLI output (applications that
        # configure logging still receive them through propagation).
        env.quiet_pykmip()
        try:
            from kmip.pie.client import ProxyKmipClient
        except ImportError:
            # Local to this process (never changes shared state); the message names the extra.
            raise VaultLocalError(
                MissingExtraError("a kmip vault", "kmip").message, code="vault_client_missing"
            ) from None
        for field in ("cert", "key", "ca"):
            if not os.access(self.config[field], os.R_OK):
                raise VaultLocalError(
                    f"kmip vault {self.name}: this process cannot read the {field} file "
                    f"{self.config[field]}; install it there and let this process's user read it",
                    code="vault_config_missing",
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
        except ssl.SSLError as exc:
            # The TLS handshake failed: this process's certificate, key or CA does not match the
            # server's (a configuration of this process, not the key owner's answer about the key).
            raise VaultLocalError(
                f"kmip vault {self.name}: TLS handshake with {self.config['host']}:{self.config['port']} "
                f"failed ({type(exc).__name__}: {getattr(exc, 'reason', None) or 'ssl error'}); check the "
                "vault's client certificate, key and CA files",
                code="vault_tls_failed",
            ) from None
        except Exception as exc:
            raise VaultUnavailableError(
                f"kmip vault {self.name} unreachable ({type(exc).__name__})"
            ) from None
        try:
            env.check_server_name(client.proxy.socket.getpeercert(), self.config["host"])
        except KeyshiftError:
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
                    raise env.map_failure(exc, what) from None
                except (OSError, EOFError, ValueError, AttributeError) as exc:
                    # socket closed by the server (idle timeout), TLS errors, truncated responses
                    self.close()
                    if attempt:
                        raise VaultUnavailableError(
                            f"kmip vault {self.name}: connection failed ({type(exc).__name__})"
                        ) from None
                except Exception as exc:  # the client library failed in this process
                    self.close()
                    raise VaultLocalError(
                        f"kmip vault {self.name}: the KMIP client failed ({type(exc).__name__}); "
                        "check the PyKMIP version installed with this process",
                        code="vault_client_error",
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
        return max(versions, key=lambda u: (uid_order(u), versions[u].get("Initial Date") or 0))

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
    def _mac_key(self, client: Any, uid: str) -> bytes:
        cached = self._mac_keys.get(uid)
        now = time.monotonic()
        if cached is not None and now - cached[0] < MAC_KEY_TTL:
            return cached[1]
        block, _ = client.encrypt(
            env.MAC_LABEL, uid=uid, cryptographic_parameters=env.cbc_params(), iv_counter_nonce=b"\x00" * 16
        )
        key = env.mac_key_from(block)
        self._mac_keys[uid] = (now, key)
        return key

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
            return env.map_failure(again, f"key {ref}")
        try:
            self._state_check(ref, attrs)
        except KeyshiftError as typed:
            return typed
        return env.map_failure(exc, f"key {ref}")
