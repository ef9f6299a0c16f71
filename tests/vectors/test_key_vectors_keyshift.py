"""Keyshift's own code agrees with tests/vectors/key_vectors.json, and regenerating it is byte-stable.

The generator computes most values with Keyshift's functions; these tests check the other direction:
the product opens what the vectors say it wrote (master key check, sealed material, local wraps,
the KMIP envelope, records, events, files, search tokens, the lake key wrap).
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from pathlib import Path

import pytest

from keyshift.crypto.dek import DataKey, Keyring
from keyshift.crypto.records import AssociatedData, RecordCipher
from keyshift.crypto.stream import decrypt_stream
from keyshift.errors import IntegrityError
from keyshift.features.search import tokens, words
from keyshift.stores.docstore import from_doc
from keyshift.stores.records import decode_value
from keyshift.vaults import kmip_envelope
from keyshift.vaults.base import KeyType
from keyshift.vaults.local_crypto import load_secret, material_ad
from keyshift.vaults.master_key import MasterKey, MasterKeyError

HERE = Path(__file__).parent
V = json.loads((HERE / "key_vectors.json").read_text(encoding="utf-8"))
TENANT, ENV = V["tenant_id"], V["environment_id"]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_committed_key_vectors_match_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("keyshift_make_key_vectors", HERE / "make_key_vectors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (HERE / "key_vectors.json").read_text(encoding="utf-8") == module.render()


def test_master_key_opens_the_sealed_vectors() -> None:
    master = MasterKey(h(V["master"]["file"]["master_key"]), "file")
    assert master.check_value == V["master"]["file"]["check"]
    for entry in V["local_sealed_keys"]:
        ad = material_ad(entry["vault_id"], entry["key_name"], entry["version"])
        assert ad.decode() == entry["ad"]
        assert master.open(h(entry["sealed"]), ad).hex() == entry["secret"]
        with pytest.raises(MasterKeyError):
            master.open(h(entry["sealed"]), material_ad(entry["vault_id"], entry["key_name"], "other"))


def test_local_keys_unwrap_both_wrap_vectors() -> None:
    aes, rsa = V["local_sealed_keys"]
    w = V["local_wraps"]
    assert (
        load_secret(KeyType.AES, 256, h(aes["secret"])).unwrap(h(w["aes_kwp"]["wrapped"])).hex() == w["dek"]
    )
    assert (
        load_secret(KeyType.RSA, 2048, h(rsa["secret"])).unwrap(h(w["rsa_oaep_256"]["wrapped"])).hex()
        == w["dek"]
    )


def test_kmip_envelope_parses_and_tags_alike() -> None:
    k = V["external_wraps"]["kmip"]
    iv, ct, tag = kmip_envelope.parse(h(k["envelope"]))
    assert (iv.hex(), ct.hex(), tag.hex()) == (k["iv"], k["ciphertext"], k["tag"])
    assert kmip_envelope.mac_key_from(h(k["mac_block"])).hex() == k["mac_key"]
    assert (
        kmip_envelope.tag(h(k["mac_key"]), k["uid"], k["name"], iv, ct, k["canonical_context"].encode())
        == tag
    )


def test_data_vectors_decrypt_with_keyshift() -> None:
    d = V["data"]
    r = d["record"]
    key = DataKey(h(r["dek_id"]), h(V["local_wraps"]["dek"]))
    plain = RecordCipher(Keyring(key)).decrypt(
        h(r["blob"]), AssociatedData(TENANT, ENV, "records", "accounts", "a1")
    )
    assert decode_value(plain) == r["value"]
    e = d["audit_event"]
    blob = from_doc(e["document"])
    body = RecordCipher(Keyring(DataKey(h(e["dek_id"]), h(e["dek"])))).decrypt(
        blob, AssociatedData(TENANT, ENV, "audit", "events", e["event_id"])
    )
    assert json.loads(body)["at"] == e["at"]
    f = d["file"]
    out = io.BytesIO()
    ad = AssociatedData(TENANT, ENV, "files", "files", f["path"]).encode()
    decrypt_stream(io.BytesIO(h(f["ciphertext"])), out, lambda _id: DataKey(h(f["dek_id"]), h(f["dek"])), ad)
    assert out.getvalue().hex() == f["plaintext"]
    s = d["search"]
    assert words(s["text"]) == s["words"]
    assert {w: tokens(h(s["table_key"]), [w]).pop().hex() for w in s["words"]} == s["tokens"]
    lake = d["lake"]
    cipher = RecordCipher(Keyring(DataKey(h(lake["dek_id"]), h(lake["dek"]))))
    ad_lake = AssociatedData(TENANT, ENV, "lake", "kms", lake["master_key_identifier"])
    assert cipher.decrypt(base64.b64decode(lake["wrapped_key"]), ad_lake).hex() == lake["parquet_kek"]
    with pytest.raises(IntegrityError):
        cipher.decrypt(
            base64.b64decode(lake["wrapped_key"]), ad_lake.with_record("keyshift-lake-" + "00" * 16)
        )
