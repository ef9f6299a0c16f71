"""The master key of a state home: it encrypts the local vault's key material at rest.

Two kinds, chosen at `keyshift init`:

- `file`: HOME/master.key holds 32 random bytes, created with O_CREAT|O_EXCL and mode 0600 (never
  readable by group or others, not even for an instant). Loading refuses a file with any group or
  other permission bit.
- `scrypt`: when KEYSHIFT_MASTER_PASSPHRASE is set at init, the key is derived from it with scrypt;
  salt and cost parameters live in HOME/master.json and the passphrase must be set on every use.

Either way master.json carries a key-check value (HMAC-SHA256 of a fixed label under the key), so a
wrong passphrase or a swapped master.key is reported as a clear error, never turned into garbage
keys. The key itself is never stored in the database, logged or put into an error message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keyshift.errors import ConflictError, KeyInaccessibleError, UsageError

MASTER_KEY_FILE = "master.key"
MASTER_META_FILE = "master.json"
PASSPHRASE_ENV = "KEYSHIFT_MASTER_PASSPHRASE"  # noqa: S105 (an env var name)
META_FORMAT = 1
KEY_BYTES = 32
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_CHECK_LABEL = b"keyshift master key check v1"
_SEAL_VERSION = b"\x01"
_SCRYPT_MAXMEM = 256 * 1024 * 1024
_NONCE = 12


class MasterKeyError(KeyInaccessibleError):
    """The master key is wrong for this home (bad passphrase, swapped file) or material is corrupt.

    A failure of this process's setup, not the key owner's answer: outcome "local", HTTP 503.
    """

    code = "master_key_invalid"
    http_status = 503
    outcome = "local"


class MasterKey:
    """Seals and opens secret key material with AES-256-GCM under a key derived from the master key."""

    def __init__(self, raw: bytes, kind: str) -> None:
        if len(raw) != KEY_BYTES:
            raise UsageError("master key must be 32 bytes")
        self.kind = kind
        self._check = _check_value(raw)
        enc = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"keyshift local vault v1")
        self._aead = AESGCM(enc.derive(raw))

    def __repr__(self) -> str:  # never show key bytes
        return f"MasterKey(kind={self.kind!r})"

    @property
    def check_value(self) -> str:
        return self._check

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, plaintext, ad)

    def open(self, blob: bytes, ad: bytes) -> bytes:
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _SEAL_VERSION:
            raise MasterKeyError("stored key material is malformed")
        try:
            return self._aead.decrypt(blob[1 : 1 + _NONCE], blob[1 + _NONCE :], ad)
        except InvalidTag:
            raise MasterKeyError(
                "stored key material does not authenticate under this home's master key "
                "(wrong master key or tampered row)"
            ) from None


def _check_value(raw: bytes) -> str:
    return hmac.new(raw, _CHECK_LABEL, hashlib.sha256).hexdigest()[:32]


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        passphrase.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=KEY_BYTES
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` exclusively with mode 0600 and write `data` (FileExistsError if present)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_meta(home: Path, meta: dict[str, Any]) -> None:
    tmp = home / (MASTER_META_FILE + ".tmp")
    tmp.unlink(missing_ok=True)
    _write_private(tmp, json.dumps(meta, indent=2).encode())
    os.replace(tmp, home / MASTER_META_FILE)


def exists(home: Path) -> bool:
    return (home / MASTER_KEY_FILE).exists() or (home / MASTER_META_FILE).exists()


def create_master_key(home: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Create the home's master key unless one exists. Returns {"created": bool, "kind": ...}."""
    env = os.environ if env is None else env
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if exists(home):
        key = load_master_key(home, env)
        return {"created": False, "kind": key.kind}
    passphrase = env.get(PASSPHRASE_ENV)
    if passphrase:
        salt = secrets.token_bytes(16)
        raw = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        meta = {
            "format": META_FORMAT,
            "kind": "scrypt",
            "salt": base64.b64encode(salt).decode(),
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "check": _check_value(raw),
        }
        _write_meta(home, meta)
        return {"created": True, "kind": "scrypt"}
    raw = secrets.token_bytes(KEY_BYTES)
    try:
        _write_private(home / MASTER_KEY_FILE, raw)
    except FileExistsError:  # another process won the race; use its key
        return {"created": False, "kind": load_master_key(home, env).kind}
    _write_meta(home, {"format": META_FORMAT, "kind": "file", "check": _check_value(raw)})
    return {"created": True, "kind": "file"}


def _read_meta(home: Path) -> dict[str, Any] | None:
    f = home / MASTER_META_FILE
    if not f.exists():
        return None
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        raise ConflictError(f"{f} is unreadable or not JSON", code="master_key_corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise ConflictError(f"{f} has an unsupported format", code="master_key_corrupt")
    return meta


def load_master_key(home: Path, env: Mapping[str, str] | None = None) -> MasterKey:
    """Load and verify the master key of `home`; clear errors for every way it can be wrong."""
    env = os.environ if env is None else env
    meta = _read_meta(home)
    if meta is not None and meta.get("kind") == "scrypt":
        raw = _load_scrypt(home, meta, env)
        kind = "scrypt"
    else:
        raw = _load_file(home)
        kind = "file"
    check = meta.get("check") if meta else None
    if isinstance(check, str) and not hmac.compare_digest(check, _check_value(raw)):
        what = "passphrase" if kind == "scrypt" else f"{home / MASTER_KEY_FILE}"
        raise MasterKeyError(f"wrong master key: the {what} does not match this home's key-check value")
    return MasterKey(raw, kind)


def _load_scrypt(home: Path, meta: dict[str, Any], env: Mapping[str, str]) -> bytes:
    passphrase = env.get(PASSPHRASE_ENV)
    if not passphrase:
        raise ConflictError(
            f"the master key of {home} is passphrase-protected; set {PASSPHRASE_ENV}",
            code="master_passphrase_required",
        )
    try:
        salt = base64.b64decode(str(meta["salt"]), validate=True)
        n, r, p = int(meta["n"]), int(meta["r"]), int(meta["p"])
    except (KeyError, ValueError, TypeError):
        raise ConflictError(f"{home / MASTER_META_FILE} is incomplete", code="master_key_corrupt") from None
    # Hard caps so a tampered file cannot make us burn unbounded CPU or memory.
    in_range = 2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4
    if not (len(salt) >= 16 and in_range and 128 * n * r <= _SCRYPT_MAXMEM // 2):
        raise ConflictError(
            f"{home / MASTER_META_FILE} has out-of-range scrypt parameters", code="master_key_corrupt"
        )
    return _derive(passphrase, salt, n, r, p)


def _load_file(home: Path) -> bytes:
    f = home / MASTER_KEY_FILE
    try:
        fd = os.open(f, os.O_RDONLY)
    except FileNotFoundError:
        raise ConflictError(
            f"{f} is missing; the local vault's keys cannot be decrypted", code="master_key_missing"
        ) from None
    try:
        st = os.fstat(fd)
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConflictError(
                f"{f} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                "refusing to use it — run `chmod 600` on it",
                code="master_key_insecure",
            )
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise ConflictError(f"{f} does not hold a 32-byte key", code="master_key_corrupt")
    return data
