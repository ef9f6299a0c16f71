"""Decrypt the known-answer vectors with ONLY pyca/cryptography and docs/FORMAT.md.

This file must not import keyshift: it is the proof that a user holding a DEK can read their
data without Keyshift. The decoders below are written from docs/FORMAT.md alone.
"""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VECTORS = json.loads((Path(__file__).parent / "vectors.json").read_text())


# --- the "decrypt your own data" recipe from docs/FORMAT.md -------------------------------
def encode_ad(tenant: str, environment: str, store: str, collection: str, record_id: str) -> bytes:
    out = b""
    for value in (tenant, environment, store, collection, record_id):
        raw = value.encode("utf-8")
        out += struct.pack(">I", len(raw)) + raw
    return out


def decrypt_record(key: bytes, blob: bytes, ad: bytes) -> bytes:
    if blob[:4] != b"KS\x01\x01" or len(blob) < 48:
        raise ValueError("not a Keyshift v1 record")
    header, nonce = blob[:32], blob[20:32]
    return AESGCM(key).decrypt(nonce, blob[32:], header + ad)


def decrypt_file(key: bytes, data: bytes, ad: bytes) -> bytes:
    header = data[:63]
    if header[:4] != b"KF\x01\x01":
        raise ValueError("not a Keyshift v1 stream")
    (segment_size,) = struct.unpack(">I", header[20:24])
    salt, prefix = header[24:56], header[56:63]
    subkey = HKDF(hashes.SHA256(), 32, salt, b"keyshift stream v1").derive(key)
    aead = AESGCM(subkey)
    body = data[63:]
    step = segment_size + 16
    count = max(1, -(-len(body) // step))
    out = b""
    for i in range(count):
        last = i == count - 1
        nonce = prefix + struct.pack(">IB", i, 1 if last else 0)
        out += aead.decrypt(nonce, body[i * step : (i + 1) * step], header + ad)
    return out


# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", VECTORS["records"], ids=lambda v: v["name"])
def test_record_vectors_with_pyca_only(vector: dict) -> None:
    ad = encode_ad(**vector["ad"])
    assert ad.hex() == vector["ad_encoded"]
    blob = bytes.fromhex(vector["blob"])
    assert blob[4:20].hex() == vector["dek_id"] and blob[20:32].hex() == vector["nonce"]
    plaintext = decrypt_record(bytes.fromhex(vector["key"]), blob, ad)
    assert plaintext.hex() == vector["plaintext"]


@pytest.mark.parametrize("vector", VECTORS["record_failures"], ids=lambda v: v["name"])
def test_record_failure_vectors_with_pyca_only(vector: dict) -> None:
    with pytest.raises((InvalidTag, ValueError)):
        decrypt_record(bytes.fromhex(vector["key"]), bytes.fromhex(vector["blob"]), encode_ad(**vector["ad"]))


@pytest.mark.parametrize("vector", VECTORS["streams"], ids=lambda v: v["name"])
def test_stream_vectors_with_pyca_only(vector: dict) -> None:
    data = bytes.fromhex(vector["ciphertext"])
    assert data[4:20].hex() == vector["dek_id"]
    assert struct.unpack(">I", data[20:24])[0] == vector["segment_size"]
    plaintext = decrypt_file(bytes.fromhex(vector["key"]), data, bytes.fromhex(vector["ad"]))
    assert plaintext.hex() == vector["plaintext"]


@pytest.mark.parametrize("vector", VECTORS["stream_failures"], ids=lambda v: v["name"])
def test_stream_failure_vectors_with_pyca_only(vector: dict) -> None:
    with pytest.raises(InvalidTag):
        decrypt_file(
            bytes.fromhex(vector["key"]), bytes.fromhex(vector["ciphertext"]), bytes.fromhex(vector["ad"])
        )


def test_the_recipe_printed_in_format_md_decrypts_the_vectors() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "FORMAT.md").read_text()
    section = doc.split("## 4. Decrypt your own data")[1]
    code = section.split("```python\n")[1].split("```")[0]
    code = "\n".join(line for line in code.splitlines() if not line.startswith("row = "))
    namespace: dict = {}
    exec(compile(code, "FORMAT.md", "exec"), namespace)  # noqa: S102 - our own documentation
    for vector in VECTORS["records"]:
        ad = namespace["encode_ad"](**vector["ad"])
        got = namespace["decrypt_record"](bytes.fromhex(vector["key"]), bytes.fromhex(vector["blob"]), ad)
        assert got.hex() == vector["plaintext"]
    for vector in VECTORS["streams"]:
        key, data, ad = (bytes.fromhex(vector[k]) for k in ("key", "ciphertext", "ad"))
        assert namespace["decrypt_file"](key, data, ad).hex() == vector["plaintext"]
    for vector in VECTORS["stream_failures"]:
        key, data, ad = (bytes.fromhex(vector[k]) for k in ("key", "ciphertext", "ad"))
        with pytest.raises(InvalidTag):
            namespace["decrypt_file"](key, data, ad)


def test_this_file_does_not_import_keyshift() -> None:
    tree = ast.parse(Path(__file__).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "cryptography.hazmat.primitives.ciphers.aead" in modules
    assert not any(name.split(".")[0] == "keyshift" for name in modules)
