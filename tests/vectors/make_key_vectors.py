"""Generate tests/vectors/key_vectors.json: known-answer vectors for every key layer.

From the home's master key down to one record, one audit event, one file, one search token and one
lake key wrap (docs/FORMAT.md sections 6-9), for the local vault (sealed AES and RSA key material,
AES-KWP and RSA-OAEP-256 wraps) and the external wrap formats (PKCS#11 AES-KW / RSA-OAEP SHA-1,
the KMIP envelope). Every value is computed with Keyshift's own functions where they are
deterministic; the pieces that are random by nature (an RSA key pair, OAEP ciphertexts) are made
once and then carried over from the committed file, so running this again reproduces the file byte
for byte (tests/vectors/test_key_vectors_keyshift.py checks that). Run:

    .venv/bin/python tests/vectors/make_key_vectors.py      # rewrite key_vectors.json
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from keyshift.crypto.dek import DataKey
from keyshift.crypto.records import AssociatedData, _encrypt_with_nonce
from keyshift.crypto.stream import encrypt_stream
from keyshift.features.search import tokens, words
from keyshift.vaults import kmip_envelope
from keyshift.vaults.base import KeyType
from keyshift.vaults.external import canonical_context
from keyshift.vaults.local_crypto import ALG_AES, load_secret, material_ad
from keyshift.vaults.master_key import _check_value, _derive

HERE = Path(__file__).resolve().parent
OUT = HERE / "key_vectors.json"

TENANT, ENV = "ten_0123456789abcdef0123", "env_89abcdef0123456789ab"
VAULT = "vlt_00112233445566778899"


def det(label: str, n: int) -> bytes:
    out, counter = b"", 0
    while len(out) < n:
        out += hashlib.sha256(f"keyshift-key-vectors/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def _pinned() -> dict[str, Any]:
    """The random-by-nature parts of the committed file (RSA key, OAEP outputs), if there is one."""
    if not OUT.exists():
        return {}
    return dict(json.loads(OUT.read_text()).get("pinned", {}))


def _pin(pinned: dict[str, Any], name: str, make: Any) -> str:
    if name not in pinned:
        pinned[name] = make()
    return str(pinned[name])


def _seal(sealing_key: bytes, nonce: bytes, secret: bytes, ad: bytes) -> bytes:
    return b"\x01" + nonce + AESGCM(sealing_key).encrypt(nonce, secret, ad)


def master_layer() -> tuple[dict[str, Any], bytes]:
    raw = det("master/raw", 32)
    sealing = HKDF(hashes.SHA256(), 32, None, b"keyshift local vault v1").derive(raw)
    salt, n, r, p = det("master/salt", 16), 2**10, 8, 1
    scrypt_raw = _derive("correct horse battery staple", salt, n, r, p)
    return {
        "file": {"master_key": raw.hex(), "check": _check_value(raw), "sealing_key": sealing.hex()},
        "scrypt": {
            "passphrase": "correct horse battery staple",
            "master_json": {
                "format": 1,
                "kind": "scrypt",
                "salt": base64.b64encode(salt).decode(),
                "n": n,
                "r": r,
                "p": p,
                "check": _check_value(scrypt_raw),
            },
            "master_key": scrypt_raw.hex(),
        },
    }, sealing


def local_layer(sealing: bytes, pinned: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    aes_secret = det("local/aes-kek", 32)
    rsa_der = bytes.fromhex(
        _pin(
            pinned,
            "rsa_pkcs8_der",
            lambda: (
                rsa.generate_private_key(public_exponent=65537, key_size=2048)
                .private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                .hex()
            ),
        )
    )
    sealed = []
    for key_type, name, version, secret in (
        ("AES", "platform-kek", "1", aes_secret),
        ("RSA", "payroll-cmk", "2", rsa_der),
    ):
        ad = material_ad(VAULT, name, version)
        nonce = det(f"local/nonce/{name}", 12)
        sealed.append(
            {
                "vault_id": VAULT,
                "key_name": name,
                "version": version,
                "key_type": key_type,
                "size": 256 if key_type == "AES" else 2048,
                "ad": ad.decode(),
                "nonce": nonce.hex(),
                "secret": secret.hex(),
                "sealed": _seal(sealing, nonce, secret, ad).hex(),
            }
        )
    dek = det("dek/records", 32)
    aes_kek = load_secret(KeyType.AES, 256, aes_secret)
    rsa_kek = load_secret(KeyType.RSA, 2048, rsa_der)
    assert aes_kek.algorithm == ALG_AES
    wraps = {
        "dek": dek.hex(),
        "aes_kwp": {"key_name": "platform-kek", "algorithm": "AES-KWP", "wrapped": aes_kek.wrap(dek).hex()},
        "rsa_oaep_256": {
            "key_name": "payroll-cmk",
            "algorithm": "RSA-OAEP-256",
            "wrapped": _pin(pinned, "rsa_oaep_256", lambda: rsa_kek.wrap(dek).hex()),
        },
    }
    return sealed, wraps


def external_layer(rsa_der: bytes, dek: bytes, pinned: dict[str, Any]) -> dict[str, Any]:
    kek = det("external/aes-kek", 32)
    private = serialization.load_der_private_key(rsa_der, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    sha1 = asym_padding.OAEP(asym_padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)  # noqa: S303
    oaep1 = _pin(pinned, "rsa_oaep_sha1", lambda: private.public_key().encrypt(dek, sha1).hex())
    # KMIP: the server's AES-CBC/PKCS#5 under the KEK K, then Keyshift's HMAC envelope.
    uid, name, iv = "42", "payroll-cmk", det("kmip/iv", 16)
    context = {"tenant": TENANT, "environment": ENV, "store": "records"}

    def cbc(data: bytes, cbc_iv: bytes) -> bytes:
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(kek), modes.CBC(cbc_iv)).encryptor()
        return enc.update(padder.update(data) + padder.finalize()) + enc.finalize()

    ct, block = cbc(dek, iv), cbc(kmip_envelope.MAC_LABEL, bytes(16))
    mac_key = kmip_envelope.mac_key_from(block)
    ctx = canonical_context(context)
    tag = kmip_envelope.tag(mac_key, uid, name, iv, ct, ctx)
    return {
        "kek": kek.hex(),
        "pkcs11_aes_kwp": aes_key_wrap_with_padding_hex(kek, dek),
        "pkcs11_aes_kw": aes_key_wrap(kek, dek).hex(),
        "pkcs11_rsa_oaep_sha1": oaep1,
        "kmip": {
            "uid": uid,
            "name": name,
            "context": context,
            "canonical_context": ctx.decode(),
            "iv": iv.hex(),
            "mac_label": kmip_envelope.MAC_LABEL.hex(),
            "mac_block": block.hex(),
            "mac_key": mac_key.hex(),
            "ciphertext": ct.hex(),
            "tag": tag.hex(),
            "envelope": kmip_envelope.seal(iv, ct, tag).hex(),
        },
        "aws_kms_encryption_context": context,
    }


def aes_key_wrap_with_padding_hex(kek: bytes, dek: bytes) -> str:
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    return aes_key_wrap_with_padding(kek, dek).hex()


def data_layer(dek: bytes) -> dict[str, Any]:
    records = DataKey(det("dek/records/id", 16), dek)
    value = {"name": "Fabrikam", "tier": 2}
    plain = b"J" + json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    rec_ad = AssociatedData(TENANT, ENV, "records", "accounts", "a1")
    record = _encrypt_with_nonce(records, det("n/record", 12), plain, rec_ad)

    audit_key = DataKey(det("dek/audit/id", 16), det("dek/audit", 32))
    event_plain = json.dumps(
        {"at": "2026-01-05T12:00:00+00:00", "event": {"action": "login", "user": "ana"}},
        separators=(",", ":"),
    ).encode()
    ev_ad = AssociatedData(TENANT, ENV, "audit", "events", "evt_00112233445566778899")
    event = _encrypt_with_nonce(audit_key, det("n/event", 12), event_plain, ev_ad)

    files_key = DataKey(det("dek/files/id", 16), det("dek/files", 32))
    file_plain = b"\x89PNG fake logo bytes " * 300
    file_ad = AssociatedData(TENANT, ENV, "files", "files", "img/logo.png").encode()
    out = io.BytesIO()
    encrypt_stream(
        files_key,
        io.BytesIO(file_plain),
        out,
        file_ad,
        4096,
        _salt=det("file/salt", 32),
        _nonce_prefix=det("file/prefix", 7),
    )

    search_dek = det("dek/search", 32)
    info = b"keyshift/search/v1" + AssociatedData(TENANT, ENV, "search", "accounts", "").encode()
    table_key = HKDF(hashes.SHA256(), 32, None, info).derive(search_dek)
    text = "Fabrikam, Inc. — ÉTÉ"
    ws = words(text)
    toks = {w: tokens(table_key, [w]).pop().hex() for w in ws}

    lake_key = DataKey(det("dek/lake/id", 16), det("dek/lake", 32))
    master_id = "keyshift-lake-" + lake_key.id.hex()
    parquet_kek = det("lake/parquet-kek", 32)
    lake_ad = AssociatedData(TENANT, ENV, "lake", "kms", master_id)
    lake_blob = _encrypt_with_nonce(lake_key, det("n/lake", 12), parquet_kek, lake_ad)
    return {
        "record": {
            "dek_id": records.id.hex(),
            "table": "accounts",
            "record_id": "a1",
            "value": value,
            "plaintext": plain.hex(),
            "ad_encoded": rec_ad.encode().hex(),
            "blob": record.hex(),
        },
        "audit_event": {
            "dek": audit_key.key.hex(),
            "dek_id": audit_key.id.hex(),
            "event_id": "evt_00112233445566778899",
            "at": "2026-01-05T12:00:00+00:00",
            "plaintext": event_plain.hex(),
            "blob": event.hex(),
            "document": {"v": 1, "dek": audit_key.id.hex(), "ct": base64.b64encode(event).decode()},
        },
        "file": {
            "dek": files_key.key.hex(),
            "dek_id": files_key.id.hex(),
            "path": "img/logo.png",
            "segment_size": 4096,
            "plaintext": file_plain.hex(),
            "ciphertext": out.getvalue().hex(),
        },
        "search": {
            "dek": search_dek.hex(),
            "table": "accounts",
            "info": info.hex(),
            "table_key": table_key.hex(),
            "text": text,
            "words": ws,
            "tokens": toks,
        },
        "lake": {
            "dek": lake_key.key.hex(),
            "dek_id": lake_key.id.hex(),
            "master_key_identifier": master_id,
            "parquet_kek": parquet_kek.hex(),
            "ad_encoded": lake_ad.encode().hex(),
            "wrapped_key": base64.b64encode(lake_blob).decode(),
        },
    }


def build() -> dict[str, Any]:
    pinned = _pinned()
    master, sealing = master_layer()
    sealed, wraps = local_layer(sealing, pinned)
    dek = bytes.fromhex(wraps["dek"])
    rsa_der = bytes.fromhex(sealed[1]["secret"])
    return {
        "format": "keyshift-key-vectors",
        "version": 1,
        "doc": "docs/FORMAT.md",
        "tenant_id": TENANT,
        "environment_id": ENV,
        "master": master,
        "local_sealed_keys": sealed,
        "local_wraps": wraps,
        "external_wraps": external_layer(rsa_der, dek, pinned),
        "data": data_layer(dek),
        "pinned": pinned,
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT}\n")
