"""The `kmip` vault's wrap envelope, configuration, TLS host-name check and error mapping.

Envelope: ``0x01 | IV (16) | len(C) (2, big endian) | C | T (32)`` with ``C`` the server's AES-CBC
(PKCS#5) encryption of the DEK under a fresh random IV and ``T = HMAC-SHA256(Km, "keyshift-kmip-wrap-v1"
| uid | name | IV | C | context)`` (each part length-prefixed). ``Km = SHA-256("keyshift-kmip-mac|" |
server.Encrypt(K, AES-CBC, IV = 0^16, MAC_LABEL))``: see keyshift.vaults.kmip for why this is sound.
`parse` checks every length against hard caps before anything is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import struct
from collections.abc import Mapping
from typing import Any

from keyshift.errors import ConflictError, KeyshiftError, UsageError, VaultUnavailableError
from keyshift.vaults.base import (
    AccessDeniedError,
    KeyDisabledError,
    KeyNotFoundError,
    UnwrapError,
    VaultLocalError,
)
from keyshift.vaults.external import unsupported

KIND = "kmip"
ALGORITHM = "kmip:AES-CBC+HMAC-SHA256"
ENVELOPE_VERSION = 1
MAC_LABEL = b"keyshift-kmip-mac-key-v1".ljust(32, b"\x00")
MAX_ENVELOPE = 1024


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


def cbc_params() -> dict[str, Any]:
    from kmip import enums

    return {
        "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
        "block_cipher_mode": enums.BlockCipherMode.CBC,
        "padding_method": enums.PaddingMethod.PKCS5,
    }


def tag(mac_key: bytes, uid: str, name: str, iv: bytes, ct: bytes, context: bytes) -> bytes:
    msg = b"keyshift-kmip-wrap-v1"
    for part in (uid.encode(), name.encode(), iv, ct, context):
        msg += struct.pack(">I", len(part)) + part
    return hmac.new(mac_key, msg, hashlib.sha256).digest()


def mac_key_from(block: bytes) -> bytes:
    """Km from the server's CBC encryption of MAC_LABEL under IV 0."""
    return hashlib.sha256(b"keyshift-kmip-mac|" + bytes(block)).digest()


def seal(iv: bytes, ct: bytes, tag_bytes: bytes) -> bytes:
    return bytes([ENVELOPE_VERSION]) + iv + struct.pack(">H", len(ct)) + ct + tag_bytes


def quiet_pykmip() -> None:
    import logging

    logger = logging.getLogger("kmip")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def check_server_name(cert: Any, host: str) -> None:
    """PyKMIP verifies the server certificate against the CA but not the host name; do it here."""
    if not cert:
        raise VaultLocalError(
            f"KMIP server {host} presented no certificate; check the vault's host and CA",
            code="vault_tls_failed",
        )
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
    raise VaultLocalError(
        f"KMIP server certificate does not name {host}; check the vault's --host", code="vault_tls_failed"
    )


def parse(blob: bytes) -> tuple[bytes, bytes, bytes]:
    """Check lengths against hard caps before reading anything."""
    if not 1 + 16 + 2 + 16 + 32 <= len(blob) <= MAX_ENVELOPE or blob[0] != ENVELOPE_VERSION:
        raise UnwrapError("wrapped key failed to unwrap")
    iv = blob[1:17]
    (n,) = struct.unpack(">H", blob[17:19])
    if n % 16 or 19 + n + 32 != len(blob):
        raise UnwrapError("wrapped key failed to unwrap")
    return iv, blob[19 : 19 + n], blob[19 + n :]


def map_failure(exc: Any, what: str) -> KeyshiftError:
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
        return VaultLocalError(
            f"the KMIP server did not accept this process's client certificate for {what}; "
            "check the vault's cert/key files",
            code="vault_login_failed",
        )
    if reason == enums.ResultReason.CRYPTOGRAPHIC_FAILURE:
        return UnwrapError("wrapped key failed to unwrap")
    if reason in (enums.ResultReason.OPERATION_NOT_SUPPORTED, enums.ResultReason.FEATURE_NOT_SUPPORTED):
        return unsupported(KIND, f"this operation on {what}")
    if reason == enums.ResultReason.ILLEGAL_OPERATION:
        return ConflictError(f"the KMIP server refused this operation on {what}", code="illegal_operation")
    return VaultUnavailableError(f"KMIP server error for {what} ({getattr(reason, 'name', reason)})")
