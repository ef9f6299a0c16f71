"""Walk every key layer of tests/vectors/key_vectors.json with ONLY pyca/cryptography and the standard
library, from docs/FORMAT.md: master key -> check value -> sealed local key -> AES-KWP / RSA-OAEP-256
unwrap -> DEK -> record, audit event, file, search token, lake key; plus the external wrap formats.

This file must not import keyshift (see the last test); the reference decryptor in tools/ is loaded
by path and checked against the same vectors.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import importlib.util
import io
import json
import struct
import unicodedata
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap,
    aes_key_unwrap_with_padding,
)

ROOT = Path(__file__).resolve().parents[2]
V = json.loads((Path(__file__).parent / "key_vectors.json").read_text(encoding="utf-8"))
TENANT, ENV = V["tenant_id"], V["environment_id"]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def encode_ad(*fields: str) -> bytes:
    return b"".join(struct.pack(">I", len(f.encode())) + f.encode() for f in fields)


def open_record(key: bytes, blob: bytes, ad: bytes) -> bytes:
    assert blob[:4] == b"KS\x01\x01"
    return AESGCM(key).decrypt(blob[20:32], blob[32:], blob[:32] + ad)


def sealing_key(master: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, b"keyshift local vault v1").derive(master)


def open_sealed(master: bytes, entry: dict) -> bytes:
    ad = json.dumps(
        ["keyshift-local-key/v1", entry["vault_id"], entry["key_name"], entry["version"]]
    ).encode()
    sealed = h(entry["sealed"])
    assert sealed[:1] == b"\x01"
    return AESGCM(sealing_key(master)).decrypt(sealed[1:13], sealed[13:], ad)


# -- master key --------------------------------------------------------------------------------------


def test_master_key_check_value_and_sealing_key() -> None:
    m = V["master"]["file"]
    raw = h(m["master_key"])
    assert hmac.new(raw, b"keyshift master key check v1", hashlib.sha256).hexdigest()[:32] == m["check"]
    assert sealing_key(raw).hex() == m["sealing_key"]


def test_scrypt_master_key_from_passphrase_and_master_json() -> None:
    s = V["master"]["scrypt"]
    meta = s["master_json"]
    raw = hashlib.scrypt(
        s["passphrase"].encode(),
        salt=base64.b64decode(meta["salt"]),
        n=meta["n"],
        r=meta["r"],
        p=meta["p"],
        maxmem=256 << 20,
        dklen=32,
    )
    assert raw.hex() == s["master_key"]
    assert hmac.new(raw, b"keyshift master key check v1", hashlib.sha256).hexdigest()[:32] == meta["check"]


# -- local vault: sealed material and both wrap kinds -------------------------------------------------


@pytest.mark.parametrize("entry", V["local_sealed_keys"], ids=lambda e: e["key_type"])
def test_sealed_local_key_material_opens_under_the_master_key(entry: dict) -> None:
    master = h(V["master"]["file"]["master_key"])
    assert open_sealed(master, entry).hex() == entry["secret"]
    assert entry["ad"] == json.dumps(
        ["keyshift-local-key/v1", entry["vault_id"], entry["key_name"], entry["version"]]
    )
    moved = dict(entry, version="9")  # the same material claimed for another version
    with pytest.raises(InvalidTag):
        open_sealed(master, moved)


def test_local_aes_kwp_and_rsa_oaep_256_unwrap_to_the_same_dek() -> None:
    master = h(V["master"]["file"]["master_key"])
    aes_entry, rsa_entry = V["local_sealed_keys"]
    w = V["local_wraps"]
    aes_kek = open_sealed(master, aes_entry)
    assert aes_key_unwrap_with_padding(aes_kek, h(w["aes_kwp"]["wrapped"])).hex() == w["dek"]
    private = serialization.load_der_private_key(open_sealed(master, rsa_entry), password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    oaep = asym_padding.OAEP(asym_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    assert private.decrypt(h(w["rsa_oaep_256"]["wrapped"]), oaep).hex() == w["dek"]
    bad = bytearray(h(w["aes_kwp"]["wrapped"]))
    bad[3] ^= 1
    with pytest.raises(InvalidUnwrap):
        aes_key_unwrap_with_padding(aes_kek, bytes(bad))


# -- external wrap formats ------------------------------------------------------------------------------


def test_pkcs11_wrap_formats() -> None:
    x, dek = V["external_wraps"], h(V["local_wraps"]["dek"])
    assert aes_key_unwrap_with_padding(h(x["kek"]), h(x["pkcs11_aes_kwp"])) == dek
    assert aes_key_unwrap(h(x["kek"]), h(x["pkcs11_aes_kw"])) == dek
    private = serialization.load_der_private_key(h(V["local_sealed_keys"][1]["secret"]), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    sha1 = asym_padding.OAEP(asym_padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)  # noqa: S303
    assert private.decrypt(h(x["pkcs11_rsa_oaep_sha1"]), sha1) == dek


def test_kmip_envelope() -> None:
    k, kek, dek = V["external_wraps"]["kmip"], h(V["external_wraps"]["kek"]), h(V["local_wraps"]["dek"])

    def cbc_encrypt(data: bytes, iv: bytes) -> bytes:  # what the KMIP server does with the KEK
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(kek), modes.CBC(iv)).encryptor()
        return enc.update(padder.update(data) + padder.finalize()) + enc.finalize()

    env = h(k["envelope"])
    assert env[0] == 1
    iv, (n,) = env[1:17], struct.unpack(">H", env[17:19])
    ct, tag = env[19 : 19 + n], env[19 + n :]
    label = b"keyshift-kmip-mac-key-v1".ljust(32, b"\x00")
    assert label.hex() == k["mac_label"]
    mac_key = hashlib.sha256(b"keyshift-kmip-mac|" + cbc_encrypt(label, bytes(16))).digest()
    assert mac_key.hex() == k["mac_key"]
    ctx = json.dumps(k["context"], sort_keys=True, separators=(",", ":")).encode()
    msg = b"keyshift-kmip-wrap-v1"
    for part in (k["uid"].encode(), k["name"].encode(), iv, ct, ctx):
        msg += struct.pack(">I", len(part)) + part
    assert hmac.compare_digest(hmac.new(mac_key, msg, hashlib.sha256).digest(), tag)
    dec = Cipher(algorithms.AES(kek), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    assert unpadder.update(dec.update(ct) + dec.finalize()) + unpadder.finalize() == dek


# -- data: record (J tag), audit event, file, search token, lake key ---------------------------------------


def test_record_with_internal_ids_and_json_tag() -> None:
    r, dek = V["data"]["record"], h(V["local_wraps"]["dek"])
    blob = h(r["blob"])
    assert blob[4:20].hex() == r["dek_id"]
    plain = open_record(dek, blob, encode_ad(TENANT, ENV, "records", r["table"], r["record_id"]))
    assert plain[:1] == b"J" and json.loads(plain[1:]) == r["value"]
    with pytest.raises(InvalidTag):  # the names, not the ids: what FORMAT.md must not suggest
        open_record(dek, blob, encode_ad("contoso", "contoso-prod", "records", r["table"], r["record_id"]))


def test_audit_event_document() -> None:
    e = V["data"]["audit_event"]
    doc = e["document"]
    assert doc["v"] == 1 and doc["dek"] == e["dek_id"]
    blob = base64.b64decode(doc["ct"])
    body = json.loads(
        open_record(h(e["dek"]), blob, encode_ad(TENANT, ENV, "audit", "events", e["event_id"]))
    )
    assert body["at"] == e["at"] and body["event"] == {"action": "login", "user": "ana"}


def test_file_stream() -> None:
    f = V["data"]["file"]
    data, key = h(f["ciphertext"]), h(f["dek"])
    header = data[:63]
    assert header[:4] == b"KF\x01\x01" and header[4:20].hex() == f["dek_id"]
    (size,) = struct.unpack(">I", header[20:24])
    aead = AESGCM(HKDF(hashes.SHA256(), 32, header[24:56], b"keyshift stream v1").derive(key))
    body, step = data[63:], size + 16
    count = max(1, -(-len(body) // step))
    ad = header + encode_ad(TENANT, ENV, "files", "files", f["path"])
    out = b"".join(
        aead.decrypt(
            header[56:63] + struct.pack(">IB", i, i == count - 1), body[i * step : (i + 1) * step], ad
        )
        for i in range(count)
    )
    assert out.hex() == f["plaintext"]


def test_search_tokens() -> None:
    s = V["data"]["search"]
    info = b"keyshift/search/v1" + encode_ad(TENANT, ENV, "search", s["table"], "")
    assert info.hex() == s["info"]
    key = HKDF(hashes.SHA256(), 32, None, info).derive(h(s["dek"]))
    assert key.hex() == s["table_key"]
    import re

    norm = unicodedata.normalize("NFKC", s["text"]).casefold()
    words = list(dict.fromkeys(w for w in re.findall(r"\w+", norm) if len(w) <= 64))
    assert words == s["words"]
    for word in words:
        assert hmac.digest(key, word.encode(), "sha256")[:16].hex() == s["tokens"][word]


def test_lake_key_wrap() -> None:
    lake = V["data"]["lake"]
    blob = base64.b64decode(lake["wrapped_key"])
    assert (
        lake["master_key_identifier"]
        == "keyshift-lake-" + blob[4:20].hex()
        == "keyshift-lake-" + lake["dek_id"]
    )
    ad = encode_ad(TENANT, ENV, "lake", "kms", lake["master_key_identifier"])
    assert open_record(h(lake["dek"]), blob, ad).hex() == lake["parquet_kek"]


# -- the reference decryptor agrees with the vectors -----------------------------------------------------


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "keyshift_decrypt_tool", ROOT / "tools" / "keyshift_decrypt.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_decryptor_functions_on_the_vectors(tmp_path: Path) -> None:
    tool = _tool()
    home = tmp_path / "home"
    home.mkdir()
    m = V["master"]["file"]
    (home / "master.key").write_bytes(h(m["master_key"]))
    (home / "master.json").write_text(json.dumps({"format": 1, "kind": "file", "check": m["check"]}))
    master = tool.MasterKey(home)
    for entry in V["local_sealed_keys"]:
        assert (
            master.open(h(entry["sealed"]), entry["vault_id"], entry["key_name"], entry["version"]).hex()
            == (entry["secret"])
        )
    (home / "master.json").write_text(json.dumps({"format": 1, "kind": "file", "check": "0" * 32}))
    with pytest.raises(tool.Refused):
        tool.MasterKey(home)
    r, dek = V["data"]["record"], h(V["local_wraps"]["dek"])
    plain = tool.open_record(
        dek, h(r["blob"]), tool.encode_ad(TENANT, ENV, "records", r["table"], r["record_id"])
    )
    assert json.loads(tool.record_line("a1", 1, plain))["value"] == r["value"]
    f = V["data"]["file"]
    out = io.BytesIO()
    ad = tool.encode_ad(TENANT, ENV, "files", "files", f["path"])
    tool.open_stream(io.BytesIO(h(f["ciphertext"])), out, lambda _id: h(f["dek"]), ad)
    assert out.getvalue().hex() == f["plaintext"]
    with pytest.raises(InvalidTag):  # truncated by one segment
        tool.open_stream(
            io.BytesIO(h(f["ciphertext"])[: 63 + 4112]), io.BytesIO(), lambda _id: h(f["dek"]), ad
        )


def test_this_file_does_not_import_keyshift() -> None:
    for path in (Path(__file__), ROOT / "tools" / "keyshift_decrypt.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(name.split(".")[0] == "keyshift" for name in names), path
        assert "cryptography.hazmat.primitives.ciphers.aead" in names
