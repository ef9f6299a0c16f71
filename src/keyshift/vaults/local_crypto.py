"""Pure cryptography of the local vault: key generation, (de)serialisation, wrap and unwrap.

RSA keys wrap with RSA-OAEP (SHA-256, MGF1-SHA-256); AES-256 keys wrap with the RFC 5649 key wrap
with padding. No I/O here; secret bytes never leave this module except sealed by the master key.
The RSA and key-serialisation modules load on first RSA use (an AES unwrap, e.g. a CLI `data get`
under the platform key, does not pay for them at start-up).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from keyshift.errors import UsageError
from keyshift.vaults.base import KeyType, UnwrapError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

RSA_SIZES = (2048, 3072, 4096)
AES_SIZES = (256,)
ALG_RSA = "RSA-OAEP-256"
ALG_AES = "AES-KWP"  # RFC 5649
DEK_MIN, DEK_MAX = 16, 64


@cache
def _oaep() -> Any:
    """RSA-OAEP with SHA-256 and MGF1-SHA-256 (no label)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def parse_key_type(value: str | KeyType) -> KeyType:
    try:
        return KeyType(str(value).upper())
    except ValueError:
        raise UsageError(f"unknown key type {value!r}; expected RSA or AES") from None


def validate_type_size(key_type: str | KeyType, size: int) -> KeyType:
    kt = parse_key_type(key_type)
    allowed = RSA_SIZES if kt is KeyType.RSA else AES_SIZES
    if size not in allowed:
        sizes = "/".join(str(s) for s in allowed)
        raise UsageError(f"invalid size {size} for a {kt.value} key; expected {sizes}")
    return kt


def material_ad(vault_id: str, name: str, version: str) -> bytes:
    """Associated data of sealed material: binds it to its vault, key name and version."""
    return json.dumps(["keyshift-local-key/v1", vault_id, name, version]).encode()


def generate(kt: KeyType, size: int) -> tuple[bytes, bytes | None]:
    """New key material: (secret bytes, DER public key or None)."""
    if kt is KeyType.AES:
        return os.urandom(size // 8), None
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa_secret(rsa.generate_private_key(public_exponent=65537, key_size=size))


def rsa_secret(private_key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization

    secret = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return secret, public


def public_pem(public_der: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_der_public_key(public_der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_dek(dek: bytes) -> None:
    if not isinstance(dek, bytes | bytearray):
        raise UsageError("the key to wrap must be bytes")
    if not DEK_MIN <= len(dek) <= DEK_MAX:
        raise UsageError(f"the key to wrap must be {DEK_MIN}..{DEK_MAX} bytes, got {len(dek)}")


@dataclass(frozen=True, repr=False)
class LoadedKey:
    """A decrypted key version, kept in memory only for the lifetime of its vault instance."""

    key_type: KeyType
    size: int
    _aes: bytes | None = None
    _rsa: rsa.RSAPrivateKey | None = None

    def __repr__(self) -> str:
        return f"LoadedKey({self.key_type.value}-{self.size})"

    @property
    def algorithm(self) -> str:
        return ALG_RSA if self.key_type is KeyType.RSA else ALG_AES

    def wrap(self, dek: bytes) -> bytes:
        check_dek(dek)
        if self._rsa is not None:
            return self._rsa.public_key().encrypt(bytes(dek), _oaep())
        assert self._aes is not None
        return aes_key_wrap_with_padding(self._aes, bytes(dek))

    def unwrap(self, wrapped: bytes) -> bytes:
        failed = UnwrapError("wrapped key could not be unwrapped")
        if not isinstance(wrapped, bytes | bytearray):
            raise failed
        if self._rsa is not None:
            if len(wrapped) != self.size // 8:
                raise failed
            try:
                dek = self._rsa.decrypt(bytes(wrapped), _oaep())
            except ValueError:
                raise failed from None
        else:
            assert self._aes is not None
            if len(wrapped) % 8 or not 16 <= len(wrapped) <= DEK_MAX + 8:
                raise failed
            try:
                dek = aes_key_unwrap_with_padding(self._aes, bytes(wrapped))
            except (InvalidUnwrap, ValueError):
                raise failed from None
        if not DEK_MIN <= len(dek) <= DEK_MAX:
            raise failed
        return dek


def load_secret(kt: KeyType, size: int, secret: bytes) -> LoadedKey:
    if kt is KeyType.AES:
        return LoadedKey(kt, size, _aes=bytes(secret))
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_der_private_key(secret, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):  # pragma: no cover - we only store RSA here
        raise UsageError("stored material is not an RSA key")
    return LoadedKey(kt, size, _rsa=key)
