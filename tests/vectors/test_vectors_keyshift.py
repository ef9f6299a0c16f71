"""Keyshift decrypts the committed known-answer vectors, and regenerating them is byte-stable."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType

import pytest

from keyshift.crypto.dek import DataKey, Keyring
from keyshift.crypto.records import AssociatedData, RecordCipher, dek_id_of
from keyshift.crypto.stream import decrypt_stream, read_stream_header
from keyshift.errors import IntegrityError

HERE = Path(__file__).parent
VECTORS = json.loads((HERE / "vectors.json").read_text())


def _make_vectors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("keyshift_make_vectors", HERE / "make_vectors.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _key(vector: dict) -> DataKey:
    return DataKey(bytes.fromhex(vector["dek_id"]), bytes.fromhex(vector["key"]))


def test_committed_vectors_match_the_generator() -> None:
    assert (HERE / "vectors.json").read_text() == _make_vectors().render()


@pytest.mark.parametrize("vector", VECTORS["records"], ids=lambda v: v["name"])
def test_keyshift_decrypts_record_vectors(vector: dict) -> None:
    key = _key(vector)
    ad = AssociatedData(**vector["ad"])
    assert ad.encode().hex() == vector["ad_encoded"]
    blob = bytes.fromhex(vector["blob"])
    assert dek_id_of(blob) == key.id
    assert RecordCipher(Keyring(key)).decrypt(blob, ad).hex() == vector["plaintext"]


@pytest.mark.parametrize("vector", VECTORS["record_failures"], ids=lambda v: v["name"])
def test_keyshift_rejects_record_failure_vectors(vector: dict) -> None:
    with pytest.raises(IntegrityError):
        RecordCipher(Keyring(_key(vector))).decrypt(
            bytes.fromhex(vector["blob"]), AssociatedData(**vector["ad"])
        )


@pytest.mark.parametrize("vector", VECTORS["streams"], ids=lambda v: v["name"])
def test_keyshift_decrypts_stream_vectors(vector: dict) -> None:
    key = _key(vector)
    data = bytes.fromhex(vector["ciphertext"])
    header = read_stream_header(io.BytesIO(data))
    assert header.dek_id == key.id and header.segment_size == vector["segment_size"]
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, lambda _id: key, bytes.fromhex(vector["ad"]))
    assert out.getvalue().hex() == vector["plaintext"]


@pytest.mark.parametrize("vector", VECTORS["stream_failures"], ids=lambda v: v["name"])
def test_keyshift_rejects_stream_failure_vectors(vector: dict) -> None:
    key = _key(vector)
    with pytest.raises(IntegrityError):
        decrypt_stream(
            io.BytesIO(bytes.fromhex(vector["ciphertext"])),
            io.BytesIO(),
            lambda _id: key,
            bytes.fromhex(vector["ad"]),
        )
