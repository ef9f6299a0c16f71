#!/usr/bin/env python3
"""Keyshift reference decryptor: export one environment's data as plaintext, without Keyshift.

Written from docs/FORMAT.md alone. It imports nothing from `keyshift`: only `cryptography` and the
standard library, plus `psycopg` (a PostgreSQL state database), `boto3` (an S3 file store or an
aws-kms vault), `python-pkcs11` (a pkcs11 vault) or `PyKMIP` (a kmip vault) when those are used.

    python tools/keyshift_decrypt.py --home ~/.keyshift ENV --out DIR
        [--database-url URL] [--document-store-url URL]
        [--file-store-url s3://bucket/prefix] [--file-store-endpoint URL]
        [--vault-config VAULT JSON]...   (override a vault's recorded connection settings)

Output (identical to `keyshift env export`):

    DIR/manifest.json          environment id/name/tenant and the counts below
    DIR/records/TABLE.jsonl    {"id", "type": "json"|"bytes", "value", "version"} per record, by id
    DIR/audit/events.jsonl     {"at" (UTC, Z), "event", "id"} per event, by time then id
    DIR/files/PATH             each file's plaintext

Everything is written to a temporary directory next to DIR and renamed to DIR only when every
record, event and file authenticated; on any failure the temporary directory is removed and the
exit code is non-zero: 2 usage, 3 not found, 4 output exists, 6 key unavailable, 8 data failed
authentication (tampered, truncated, reordered or moved).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import sqlite3
import struct
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

EXIT_USAGE, EXIT_NOT_FOUND, EXIT_EXISTS, EXIT_KEY, EXIT_TAMPERED = 2, 3, 4, 6, 8
RECORD_HEAD, STREAM_HEAD, TAG = 32, 63, 16
SQL_LAYOUT_DEFAULTS = {"audit": "document", "files": "file_storage"}


class Refused(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def tampered(what: str) -> Refused:
    return Refused(f"{what} failed authentication (tampered, truncated, reordered or moved)", EXIT_TAMPERED)


# -- the format (docs/FORMAT.md) -----------------------------------------------------------------


def encode_ad(tenant: str, environment: str, store: str, collection: str, record_id: str) -> bytes:
    out = b""
    for value in (tenant, environment, store, collection, record_id):
        raw = value.encode("utf-8")
        out += struct.pack(">I", len(raw)) + raw
    return out


def open_record(key: bytes, blob: bytes, ad: bytes) -> bytes:
    """AES-256-GCM record: header(32) = "KS" 01 01 dek-id(16) nonce(12); AD = header || location."""
    if len(blob) < RECORD_HEAD + TAG or blob[:4] != b"KS\x01\x01":
        raise InvalidTag
    return AESGCM(key).decrypt(blob[20:32], blob[32:], blob[:32] + ad)


def read_full(src: BinaryIO, n: int) -> bytes:
    """Up to n bytes, fewer only at the end of the data (network streams may return short reads)."""
    out = bytearray()
    while len(out) < n:
        chunk = src.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def open_stream(src: BinaryIO, dst: BinaryIO, key_for: Any, ad: bytes) -> int:
    """Segmented stream: header(63), then segments of S+16 bytes; the last one carries flag 1."""
    header = read_full(src, STREAM_HEAD)
    if len(header) != STREAM_HEAD or header[:4] != b"KF\x01\x01":
        raise InvalidTag
    (size,) = struct.unpack(">I", header[20:24])
    if not 4096 <= size <= 16 << 20:
        raise InvalidTag
    key = key_for(header[4:20])
    aead = AESGCM(HKDF(hashes.SHA256(), 32, header[24:56], b"keyshift stream v1").derive(key))
    prefix, step, total, index = header[56:63], size + TAG, 0, 0
    segment = read_full(src, step)
    while True:
        ahead = read_full(src, 1) if len(segment) == step else b""
        last = not ahead
        if len(segment) < TAG or index >= 1 << 32:
            raise InvalidTag
        nonce = prefix + struct.pack(">IB", index, 1 if last else 0)
        plain = aead.decrypt(nonce, segment, header + ad)
        dst.write(plain)
        total += len(plain)
        if last:
            return total
        segment = ahead + read_full(src, step - 1)
        index += 1


# -- the state database ------------------------------------------------------------------------------


class StateDb:
    """Read-only queries against a SQLite file or PostgreSQL (rows as tuples, `?` placeholders)."""

    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :].split("?", 1)[0]
            if not os.path.exists(path):
                raise Refused(f"database file {path} not found", EXIT_NOT_FOUND)
            self.conn: Any = sqlite3.connect(path)
            self.mark = "?"
        elif url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            import psycopg

            self.conn = psycopg.connect("postgresql://" + url.split("://", 1)[1], autocommit=True)
            self.mark = "%s"
        else:
            raise Refused(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}", EXIT_USAGE)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        cur.execute(sql.replace("?", self.mark), params)
        return [tuple(r) for r in cur.fetchall()]

    def close(self) -> None:
        self.conn.close()


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def as_utc(value: Any) -> datetime:
    """SQLite keeps UTC timestamps naive as text; PostgreSQL returns aware datetimes."""
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# -- unwrapping DEKs ---------------------------------------------------------------------------------


class MasterKey:
    """HOME/master.key (32 bytes), or scrypt(passphrase) per master.json; checked against `check`."""

    def __init__(self, home: Path) -> None:
        meta_file = home / "master.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        if meta.get("kind") == "scrypt":
            passphrase = os.environ.get("KEYSHIFT_MASTER_PASSPHRASE")
            if not passphrase:
                raise Refused(
                    "set KEYSHIFT_MASTER_PASSPHRASE (this home's master key is a passphrase)", EXIT_KEY
                )
            raw = hashlib.scrypt(
                passphrase.encode(),
                salt=base64.b64decode(meta["salt"]),
                n=int(meta["n"]),
                r=int(meta["r"]),
                p=int(meta["p"]),
                maxmem=256 << 20,
                dklen=32,
            )
        else:
            try:
                raw = (home / "master.key").read_bytes()
            except OSError:
                raise Refused(f"{home / 'master.key'} is missing or unreadable", EXIT_KEY) from None
        check = hmac.new(raw, b"keyshift master key check v1", hashlib.sha256).hexdigest()[:32]
        if len(raw) != 32 or ("check" in meta and not hmac.compare_digest(check, meta["check"])):
            raise Refused("the master key does not match the home's key-check value", EXIT_KEY)
        derived = HKDF(hashes.SHA256(), 32, None, b"keyshift local vault v1").derive(raw)
        self.aead = AESGCM(derived)

    def open(self, sealed: bytes, vault_id: str, name: str, version: str) -> bytes:
        ad = json.dumps(["keyshift-local-key/v1", vault_id, name, version]).encode()
        if len(sealed) < 29 or sealed[:1] != b"\x01":
            raise tampered(f"sealed key {name}/{version}")
        try:
            return self.aead.decrypt(sealed[1:13], sealed[13:], ad)
        except InvalidTag:
            raise tampered(f"sealed key {name}/{version} of vault {vault_id}") from None


class Unwrapper:
    """Unwraps `dek_wraps` rows with the vault each one names."""

    def __init__(self, db: StateDb, home: Path, overrides: dict[str, dict[str, Any]]) -> None:
        self.db, self.home, self.overrides = db, home, overrides
        self._master: MasterKey | None = None
        self._sessions: dict[str, Any] = {}

    def unwrap(self, wrap: dict[str, Any], context: dict[str, str]) -> bytes:
        rows = self.db.rows("SELECT name, kind, config FROM vaults WHERE id = ?", wrap["vault_id"])
        if not rows:
            raise Refused(f"vault {wrap['vault_id']} is not in the state database", EXIT_NOT_FOUND)
        name, kind, config = rows[0]
        config = {**(as_json(config) or {}), **self.overrides.get(name, {})}
        try:
            if kind == "local":
                return self._local(wrap)
            if kind == "pkcs11":
                return self._pkcs11(name, config, wrap)
            if kind == "kmip":
                return self._kmip(name, config, wrap, context)
            if kind == "aws-kms":
                return self._aws(config, wrap, context)
        except Refused:
            raise
        except Exception as exc:  # a vault library error: say which vault, not the key bytes
            raise Refused(
                f"vault {name} ({kind}) could not unwrap a data key: {type(exc).__name__}", EXIT_KEY
            ) from None
        raise Refused(f"vault {name} has unsupported kind {kind!r}", EXIT_USAGE)

    def _local(self, wrap: dict[str, Any]) -> bytes:
        if self._master is None:
            self._master = MasterKey(self.home)
        rows = self.db.rows(
            "SELECT k.key_type, v.material FROM local_keys k JOIN local_key_versions v ON v.key_id = k.id "
            "WHERE k.vault_id = ? AND k.name = ? AND v.version = ?",
            wrap["vault_id"],
            wrap["key_name"],
            wrap["key_version"],
        )
        if not rows:
            raise Refused(
                f"local key {wrap['key_name']} v{wrap['key_version']} not found (purged?)", EXIT_KEY
            )
        key_type, sealed = rows[0]
        secret = self._master.open(bytes(sealed), wrap["vault_id"], wrap["key_name"], wrap["key_version"])
        try:
            if wrap["algorithm"] == "AES-KWP" and key_type == "AES":
                return aes_key_unwrap_with_padding(secret, bytes(wrap["wrapped"]))
            if wrap["algorithm"] == "RSA-OAEP-256" and key_type == "RSA":
                private = serialization.load_der_private_key(secret, password=None)
                assert isinstance(private, rsa.RSAPrivateKey)
                oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
                return private.decrypt(bytes(wrap["wrapped"]), oaep)
        except (InvalidUnwrap, ValueError):
            raise tampered(f"wrapped data key {wrap['dek_id']}") from None
        raise Refused(f"unknown local wrap algorithm {wrap['algorithm']!r}", EXIT_USAGE)

    def _pkcs11(self, name: str, config: dict[str, Any], wrap: dict[str, Any]) -> bytes:
        import pkcs11
        from pkcs11 import MGF, Attribute, Mechanism, ObjectClass

        session = self._sessions.get(name)
        if session is None:
            pin_ref = config.get("pin") or {}
            pin = (
                os.environ.get(pin_ref["env"])
                if "env" in pin_ref
                else Path(pin_ref["file"]).read_text().strip()
            )
            token = pkcs11.lib(config["module"]).get_token(token_label=config["token_label"])
            session = self._sessions[name] = token.open(user_pin=pin)
        version = wrap["key_version"]
        key_id = bytes.fromhex(version[4:]) if version.startswith("hex:") else version.encode("ascii")
        alg, blob = wrap["algorithm"], bytes(wrap["wrapped"])
        template = {Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False, Attribute.TOKEN: False}
        secret = pkcs11.KeyType.GENERIC_SECRET
        if alg in ("AES-KWP", "AES-KW"):
            kek: Any = session.get_key(ObjectClass.SECRET_KEY, label=wrap["key_name"], id=key_id)
            mech = Mechanism.AES_KEY_WRAP_PAD if alg == "AES-KWP" else Mechanism.AES_KEY_WRAP
            obj = kek.unwrap_key(
                ObjectClass.SECRET_KEY, secret, blob, mechanism=mech, store=False, template=template
            )
        elif alg in ("RSA-OAEP-256", "RSA-OAEP"):
            kek = session.get_key(ObjectClass.PRIVATE_KEY, label=wrap["key_name"], id=key_id)
            hash_mgf = (
                (Mechanism.SHA256, MGF.SHA256) if alg == "RSA-OAEP-256" else (Mechanism.SHA_1, MGF.SHA1)
            )
            params = (*hash_mgf, None)
            if kek[Attribute.DECRYPT]:
                return bytes(kek.decrypt(blob, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=params))
            obj = kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                secret,
                blob,
                mechanism=Mechanism.RSA_PKCS_OAEP,
                mechanism_param=params,
                store=False,
                template=template,
            )
        else:
            raise Refused(f"unknown pkcs11 wrap algorithm {alg!r}", EXIT_USAGE)
        try:
            return bytes(obj[Attribute.VALUE])
        finally:
            obj.destroy()

    def _kmip(
        self, name: str, config: dict[str, Any], wrap: dict[str, Any], context: dict[str, str]
    ) -> bytes:
        from kmip import enums
        from kmip.pie.client import ProxyKmipClient

        blob, uid = bytes(wrap["wrapped"]), wrap["key_version"]
        if not 67 <= len(blob) <= 1024 or blob[0] != 1:
            raise tampered(f"wrapped data key {wrap['dek_id']}")
        iv, (n,) = blob[1:17], struct.unpack(">H", blob[17:19])
        if n % 16 or 19 + n + 32 != len(blob):
            raise tampered(f"wrapped data key {wrap['dek_id']}")
        ct, tag = blob[19 : 19 + n], blob[19 + n :]
        params = {
            "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
            "block_cipher_mode": enums.BlockCipherMode.CBC,
            "padding_method": enums.PaddingMethod.PKCS5,
        }
        client = ProxyKmipClient(
            hostname=config["host"],
            port=config["port"],
            cert=config["cert"],
            key=config["key"],
            ca=config["ca"],
            config_file="/dev/null",
        )
        with client:
            label = b"keyshift-kmip-mac-key-v1".ljust(32, b"\x00")
            block, _ = client.encrypt(
                label, uid=uid, cryptographic_parameters=params, iv_counter_nonce=bytes(16)
            )
            mac_key = hashlib.sha256(b"keyshift-kmip-mac|" + bytes(block)).digest()
            ctx = json.dumps(context, sort_keys=True, separators=(",", ":")).encode()
            msg = b"keyshift-kmip-wrap-v1"
            for part in (uid.encode(), wrap["key_name"].encode(), iv, ct, ctx):
                msg += struct.pack(">I", len(part)) + part
            if not hmac.compare_digest(hmac.new(mac_key, msg, hashlib.sha256).digest(), tag):
                raise tampered(f"wrapped data key {wrap['dek_id']} (kmip envelope)")
            return bytes(client.decrypt(ct, uid=uid, cryptographic_parameters=params, iv_counter_nonce=iv))

    def _aws(self, config: dict[str, Any], wrap: dict[str, Any], context: dict[str, str]) -> bytes:
        import boto3

        kms = boto3.client("kms", region_name=config["region"], endpoint_url=config.get("endpoint_url"))
        out = kms.decrypt(
            CiphertextBlob=bytes(wrap["wrapped"]), KeyId=wrap["key_version"], EncryptionContext=context
        )
        return bytes(out["Plaintext"])


class Deks:
    """The environment's DEKs by (store, id): only DEKs of this environment and store decrypt."""

    def __init__(self, db: StateDb, unwrapper: Unwrapper, tenant: str, env: str) -> None:
        self.db, self.unwrapper, self.tenant, self.env = db, unwrapper, tenant, env
        self._keys: dict[tuple[str, bytes], bytes] = {}

    def key(self, store: str, dek_id: bytes) -> bytes:
        cached = self._keys.get((store, dek_id))
        if cached is not None:
            return cached
        rows = self.db.rows(
            "SELECT w.vault_id, w.key_name, w.key_version, w.algorithm, w.wrapped FROM dek_wraps w "
            "JOIN deks d ON d.id = w.dek_id WHERE d.id = ? AND d.environment_id = ? AND d.store = ? "
            "AND d.state <> 'destroyed' AND w.state = 'current' ORDER BY w.id DESC",
            dek_id.hex(),
            self.env,
            store,
        )
        if not rows:
            raise InvalidTag  # a DEK of another environment or store: the data was moved
        vault_id, key_name, key_version, algorithm, wrapped = rows[0]
        wrap = {
            "dek_id": dek_id.hex(),
            "vault_id": vault_id,
            "key_name": key_name,
            "key_version": key_version,
            "algorithm": algorithm,
            "wrapped": wrapped,
        }
        context = {"tenant": self.tenant, "environment": self.env, "store": store}
        key = self.unwrapper.unwrap(wrap, context)
        if len(key) != 32:
            raise tampered(f"data key {dek_id.hex()}")
        self._keys[(store, dek_id)] = key
        return key


# -- reading an environment ----------------------------------------------------------------------------


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def record_line(record_id: str, version: int, plain: bytes) -> str:
    if plain[:1] == b"J":
        return dumps({"id": record_id, "type": "json", "value": json.loads(plain[1:]), "version": version})
    if plain[:1] == b"B":
        value = base64.b64encode(plain[1:]).decode("ascii")
        return dumps({"id": record_id, "type": "bytes", "value": value, "version": version})
    raise InvalidTag


class Environment:
    def __init__(self, args: argparse.Namespace) -> None:
        self.home = Path(args.home).expanduser().resolve()
        self.db = StateDb(args.database_url or f"sqlite:///{self.home / 'state.db'}")
        self.doc_url = args.document_store_url or f"sqlite:///{self.home / 'audit.db'}"
        self.file_url, self.file_endpoint = args.file_store_url, args.file_store_endpoint
        rows = self.db.rows(
            "SELECT e.id, e.name, e.tenant_id, e.stores, e.enc_mode, t.sql_restriction, t.name "
            "FROM environments e JOIN tenants t ON t.id = e.tenant_id WHERE e.id = ? OR e.name = ?",
            args.environment,
            args.environment,
        )
        if not rows:
            raise Refused(f"environment {args.environment!r} not found", EXIT_NOT_FOUND)
        self.id, self.name, self.tenant, stores, mode, restricted, self.tenant_name = rows[0]
        self.stores = as_json(stores) or {}
        self.sql_only = bool(restricted) and mode != "cmk"
        self.deks = Deks(self.db, Unwrapper(self.db, self.home, args.vault_config), self.tenant, self.id)

    def layout(self, kind: str) -> list[str]:
        """Backends holding `kind`, the one taking writes first (docs/FORMAT.md, "where data lives")."""
        main = self.stores.get(kind) or ("sql" if self.sql_only else SQL_LAYOUT_DEFAULTS[kind])
        legacy = self.stores.get(f"{kind}_from")
        return [main] + ([legacy] if legacy and legacy != main else [])

    def _missing(self, store: str, what: str, where: str, option: str) -> None:
        """Data keys of the store exist, so its data was written somewhere: never report it as empty."""
        if self.db.rows("SELECT id FROM deks WHERE environment_id = ? AND store = ?", self.id, store):
            raise Refused(
                f"this environment has {what} but {where} does not hold them; pass {option}", EXIT_NOT_FOUND
            )

    def records(self) -> Iterator[tuple[str, list[str]]]:
        tables = [
            t
            for (t,) in self.db.rows(
                "SELECT DISTINCT table_name FROM data_records WHERE environment_id = ? ORDER BY table_name",
                self.id,
            )
        ]
        for table in sorted(tables):
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", table):
                raise Refused(f"table name {table!r} is not one Keyshift writes", EXIT_TAMPERED)
            lines = []
            rows = self.db.rows(
                "SELECT record_id, version, value FROM data_records WHERE environment_id = ? "
                "AND table_name = ?",
                self.id,
                table,
            )
            for record_id, version, blob in sorted(rows):
                blob = bytes(blob)
                ad = encode_ad(self.tenant, self.id, "records", table, record_id)
                try:
                    plain = open_record(self.deks.key("records", blob[4:20]), blob, ad)
                    lines.append(record_line(record_id, int(version), plain))
                except (InvalidTag, ValueError):
                    raise tampered(f"record {table}/{record_id}") from None
            yield table, lines

    def _stored_events(self, backend: str) -> list[tuple[str, datetime, int, bytes]]:
        if backend == "sql":
            rows = self.db.rows(
                "SELECT event_id, at, seq, payload FROM data_audit WHERE environment_id = ?", self.id
            )
            return [(e, as_utc(at), int(seq), bytes(p)) for e, at, seq, p in rows]
        if self.doc_url.startswith("sqlite:///") and not os.path.exists(self.doc_url[len("sqlite:///") :]):
            self._missing("audit", "audit events", self.doc_url, "--document-store-url")
            return []  # the embedded document store is created on the first event
        docs = StateDb(self.doc_url)
        try:
            probe = "SELECT name FROM sqlite_master WHERE name = 'audit_events'"
            if docs.mark != "?":
                probe = "SELECT to_regclass('audit_events')::text"
            if not [r for r in docs.rows(probe) if r[0]]:
                return []
            rows = docs.rows(
                "SELECT event_id, at, seq, doc FROM audit_events WHERE environment_id = ?", self.id
            )
        finally:
            docs.close()
        out = []
        for event_id, at, seq, doc in rows:
            doc = as_json(doc)
            if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("ct"), str):
                raise tampered(f"audit event {event_id}")
            out.append((event_id, as_utc(at), int(seq), base64.b64decode(doc["ct"], validate=True)))
        return out

    def events(self) -> list[str]:
        seen: dict[str, tuple[datetime, str, str]] = {}
        for backend in self.layout("audit"):
            for event_id, at, _seq, blob in self._stored_events(backend):
                if event_id in seen:
                    continue
                ad = encode_ad(self.tenant, self.id, "audit", "events", event_id)
                try:
                    body = json.loads(open_record(self.deks.key("audit", blob[4:20]), blob, ad))
                    if as_utc(body["at"]) != at:
                        raise InvalidTag  # the stored timestamp was changed
                except (InvalidTag, ValueError, KeyError, TypeError):
                    raise tampered(f"audit event {event_id}") from None
                when = at.isoformat().replace("+00:00", "Z")
                seen[event_id] = (at, event_id, dumps({"at": when, "event": body["event"], "id": event_id}))
        return [line for _, _, line in sorted(seen.values())]

    def file_sources(self) -> Iterator[tuple[str, Any]]:
        """(path, opener) for every file, the store taking writes first, without duplicates."""
        seen: set[str] = set()
        for backend in self.layout("files"):
            for path, opener in sorted(self._files_in(backend), key=lambda item: item[0]):
                if path not in seen:
                    seen.add(path)
                    yield path, opener

    def _files_in(self, backend: str) -> list[tuple[str, Any]]:
        if backend == "sql":
            out: list[tuple[str, Any]] = []
            for path, file_id in self.db.rows(
                "SELECT path, file_id FROM data_files WHERE environment_id = ?", self.id
            ):
                out.append((path, lambda fid=file_id: _SqlChunks(self.db, fid)))
            return out
        if self.file_url:
            return _s3_files(self.file_url, self.file_endpoint, self.id)
        base = self.home / "files" / self.id
        if not base.is_dir():  # the directory store keeps an environment's directory once written
            self._missing("files", "files", str(base), "--file-store-url")
        # Layout 2 (`HOME/files/.layout` says `keyshift-files 2`): a directory named after a segment
        # ending in `.ksf~…` carries one more `~`. A home without the marker (layout 1, written by
        # an older Keyshift) names directories after the raw segment. Temp files live in
        # `HOME/files/.tmp/` (layout 1: `.tmp-<16 hex>.part` beside the files): never a `.ksf` file
        # of an environment's directory, so every `.ksf` file below is a path's file.
        escaped = _files_layout(self.home / "files") == 2
        found: list[tuple[str, Any]] = []
        for dirpath, _dirs, names in os.walk(base):
            rel_dir = Path(dirpath).relative_to(base).parts
            segments = [_segment_of_dir(d) if escaped else d for d in rel_dir]
            for fname in names:
                if fname.endswith(".ksf"):
                    full = Path(dirpath) / fname
                    rel = "/".join([*segments, fname[: -len(".ksf")]])
                    found.append((rel, lambda f=full: open(f, "rb")))  # noqa: SIM115 - opened by the caller's with
        return found


FILES_LAYOUT = "keyshift-files 2"


def _files_layout(root: Path) -> int:
    """The directory store's layout: 2 with the `.layout` marker, 1 (an older home) without."""
    try:
        marker = (root / ".layout").read_text().strip()
    except FileNotFoundError:
        return 1
    if marker != FILES_LAYOUT:
        raise Refused(f"{root / '.layout'} names an unknown file layout {marker!r}", EXIT_USAGE)
    return 2


def _segment_of_dir(name: str) -> str:
    """The path segment a layout-2 directory stands for: `a.ksf~` -> `a.ksf`, `b` -> `b`."""
    return name[:-1] if re.search(r"\.ksf~+$", name) else name


class _SqlChunks:
    """A file's ciphertext from `data_file_chunks`, chunk 0, 1, 2, ... (a gap ends the file)."""

    def __init__(self, db: StateDb, file_id: str) -> None:
        rows = db.rows("SELECT seq, data FROM data_file_chunks WHERE file_id = ? ORDER BY seq", file_id)
        self.data = b"".join(bytes(d) for i, (seq, d) in enumerate(rows) if seq == i)
        self.pos = 0

    def read(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def close(self) -> None:
        self.data = b""

    def __enter__(self) -> _SqlChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _s3_files(url: str, endpoint: str | None, env_id: str) -> list[tuple[str, Any]]:
    import boto3

    bucket, _, prefix = url[len("s3://") :].partition("/")
    client = boto3.client("s3", endpoint_url=endpoint)
    base = "/".join(p for p in (prefix.strip("/"), env_id) if p) + "/"
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            out.append((key[len(base) :], lambda k=key: client.get_object(Bucket=bucket, Key=k)["Body"]))
    return out


# -- the export ----------------------------------------------------------------------------------------


def safe_target(root: Path, path: str) -> Path:
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts)
    ):
        raise Refused(f"file path {path!r} is not a safe relative path", EXIT_TAMPERED)
    return root.joinpath(*parts)


def export(env: Environment, work: Path) -> dict[str, Any]:
    counts: dict[str, Any] = {"records": {}, "audit_events": 0, "files": 0, "file_bytes": 0}
    (work / "records").mkdir()
    for table, lines in env.records():
        (work / "records" / f"{table}.jsonl").write_text(
            "".join(line + "\n" for line in lines), encoding="utf-8"
        )
        counts["records"][table] = len(lines)
    (work / "audit").mkdir()
    events = env.events()
    (work / "audit" / "events.jsonl").write_text("".join(line + "\n" for line in events), encoding="utf-8")
    counts["audit_events"] = len(events)
    (work / "files").mkdir()
    for path, opener in env.file_sources():
        target = safe_target(work / "files", path)
        target.parent.mkdir(parents=True, exist_ok=True)
        ad = encode_ad(env.tenant, env.id, "files", "files", path)
        try:
            with opener() as src, open(target, "wb") as dst:
                counts["file_bytes"] += open_stream(src, dst, lambda dek: env.deks.key("files", dek), ad)
        except (InvalidTag, ValueError):
            raise tampered(f"file {path!r}") from None
        counts["files"] += 1
    manifest = {
        "environment": {"id": env.id, "name": env.name, "tenant": env.tenant_name},
        "format": "keyshift-export/v1",
        **counts,
    }
    (work / "manifest.json").write_text(dumps(manifest) + "\n", encoding="utf-8")
    return manifest


def prepare_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Refused(f"{out} exists and is not an empty directory", EXIT_EXISTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Decrypt a Keyshift environment without Keyshift.")
    parser.add_argument("environment", help="environment name or id")
    parser.add_argument("--home", default=os.environ.get("KEYSHIFT_HOME", "~/.keyshift"))
    parser.add_argument("--out", required=True, help="output directory (must not exist, or be empty)")
    parser.add_argument("--database-url", default=os.environ.get("KEYSHIFT_DATABASE_URL"))
    parser.add_argument("--document-store-url", default=os.environ.get("KEYSHIFT_DOCUMENT_STORE_URL"))
    parser.add_argument("--file-store-url", default=os.environ.get("KEYSHIFT_FILE_STORE_URL"))
    parser.add_argument("--file-store-endpoint", default=os.environ.get("KEYSHIFT_FILE_STORE_ENDPOINT"))
    parser.add_argument(
        "--vault-config",
        nargs=2,
        action="append",
        default=[],
        metavar=("VAULT", "JSON"),
        help='override a vault\'s recorded connection settings, e.g. hsm1 \'{"module": "..."}\'',
    )
    args = parser.parse_args(argv)
    work: Path | None = None
    try:
        args.vault_config = {name: json.loads(raw) for name, raw in args.vault_config}
        out = Path(args.out).expanduser().resolve()
        env = Environment(args)
        work = prepare_out(out)
        manifest = export(env, work)
        if out.exists():
            out.rmdir()
        os.replace(work, out)
        work = None
        print(dumps(manifest))
        return 0
    except Refused as exc:
        print(f"keyshift_decrypt: refused: {exc}", file=sys.stderr)
        return exc.code
    except json.JSONDecodeError:
        print("keyshift_decrypt: --vault-config takes a JSON object", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
