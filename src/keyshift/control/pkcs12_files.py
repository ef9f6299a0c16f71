"""Password-protected PKCS#12 files for legacy BYOK tenant keys: write (0600, never overwriting) and
read with clear, distinct errors. Neither the password nor key material ever appears in a message.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from keyshift.errors import UsageError

BYOK_KEY_SIZE = 2048
MAX_FILE_BYTES = 1 << 20
MIN_PASSWORD_LEN = 8
# DER: SEQUENCE { INTEGER 3, ContentInfo { OID pkcs7-data ... } } -- how a PKCS#12 PFX begins.
_PKCS7_DATA_OID = bytes.fromhex("06092a864886f70d010701")


def check_password(password: str | None, *, new: bool) -> bytes:
    if not password:
        raise UsageError("a password is required for the PKCS#12 file", code="password_required")
    if new and len(password) < MIN_PASSWORD_LEN:
        raise UsageError(
            f"the PKCS#12 password must have at least {MIN_PASSWORD_LEN} characters", code="weak_password"
        )
    return password.encode("utf-8")


def fingerprint(key: rsa.RSAPrivateKey) -> str:
    """SHA-256 (hex) of the DER SubjectPublicKeyInfo: identifies the same key across imports."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=BYOK_KEY_SIZE)


def to_pkcs12(key: rsa.RSAPrivateKey, label: str, password: bytes, now: datetime) -> bytes:
    """PKCS#12 with the key and a self-signed certificate (so common tools accept the file)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return pkcs12.serialize_key_and_certificates(
        label.encode("utf-8"), key, cert, None, serialization.BestAvailableEncryption(password)
    )


def write_new_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 (never briefly wider), refusing to overwrite anything."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; choose another --out", code="file_exists") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}", code="file_unwritable") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise UsageError(f"cannot write {path}: {exc.strerror}", code="file_unwritable") from None


def read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise UsageError(f"{path} is too large to be a PKCS#12 key file", code="not_pkcs12")
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"file {path} not found", code="file_not_found") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory", code="file_unreadable") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", code="file_unreadable") from None


def check_size(data: bytes, source: str) -> bytes:
    """Uploaded key files have the same size bound as files read from disk."""
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{source} is too large to be a PKCS#12 key file", code="not_pkcs12")
    return data


def _looks_like_pkcs12(data: bytes) -> bool:
    return len(data) > 16 and data[0] == 0x30 and _PKCS7_DATA_OID in data[:48]


def load_rsa_key(data: bytes, password: bytes, source: str) -> rsa.RSAPrivateKey:
    """The RSA-2048 private key inside a password-protected PKCS#12, or a clear UsageError."""
    if not _looks_like_pkcs12(data):
        raise UsageError(f"{source} is not a PKCS#12 (.pfx) file", code="not_pkcs12")
    try:
        key, _cert, _extra = pkcs12.load_key_and_certificates(data, password)
    except ValueError:
        raise UsageError(
            f"cannot open {source}: wrong password (or a damaged PKCS#12 file)", code="wrong_password"
        ) from None
    except Exception:
        raise UsageError(f"{source} is not a readable PKCS#12 file", code="not_pkcs12") from None
    if key is None:
        raise UsageError(f"{source} holds no private key", code="no_private_key")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UsageError(f"{source} holds a non-RSA key; BYOK keys are RSA-2048", code="wrong_key_type")
    if key.key_size != BYOK_KEY_SIZE:
        raise UsageError(
            f"{source} holds an RSA-{key.key_size} key; BYOK keys must be RSA-{BYOK_KEY_SIZE}",
            code="wrong_key_size",
        )
    return key
