"""Generate tests/vectors/vectors.json: known-answer vectors for the record and stream formats.

Deterministic: keys, ids, nonces and salts come from SHA-256 of fixed labels and are injected
through the vector-only helpers, so running this again reproduces the committed file byte for
byte (tests/vectors/test_vectors_keyshift.py checks that). Run:

    .venv/bin/python tests/vectors/make_vectors.py            # rewrite vectors.json
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

from keyshift.crypto.dek import DataKey
from keyshift.crypto.records import AssociatedData, _encrypt_with_nonce
from keyshift.crypto.stream import encrypt_stream

HERE = Path(__file__).resolve().parent
OUT = HERE / "vectors.json"


def det(label: str, n: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"keyshift-vectors/{label}/{counter}".encode()).digest()
        counter += 1
    return out[:n]


def dek(label: str) -> DataKey:
    return DataKey(det(f"{label}/id", 16), det(f"{label}/key", 32))


def ad_dict(ad: AssociatedData) -> dict[str, str]:
    return {
        "tenant": ad.tenant,
        "environment": ad.environment,
        "store": ad.store,
        "collection": ad.collection,
        "record_id": ad.record_id,
    }


def record_vector(
    name: str, key: DataKey, nonce: bytes, plaintext: bytes, ad: AssociatedData
) -> dict[str, Any]:
    blob = _encrypt_with_nonce(key, nonce, plaintext, ad)
    return {
        "name": name,
        "key": key.key.hex(),
        "dek_id": key.id.hex(),
        "ad": ad_dict(ad),
        "ad_encoded": ad.encode().hex(),
        "nonce": nonce.hex(),
        "plaintext": plaintext.hex(),
        "blob": blob.hex(),
    }


def build() -> dict[str, Any]:
    k1, k2 = dek("record-key-1"), dek("record-key-2")
    base = AssociatedData("contoso", "contoso-prod", "records", "accounts", "a1")
    records = [
        record_vector("empty plaintext", k1, det("n/0", 12), b"", base),
        record_vector("json row", k1, det("n/1", 12), b'{"name": "Fabrikam"}', base),
        record_vector(
            "unicode location",
            k2,
            det("n/2", 12),
            "caf\u00e9 \u2615".encode(),
            AssociatedData("t\u00e9nant", "env", "audit", "events", "2026-01-05T12:00:00Z#1"),
        ),
        record_vector("binary 100", k2, det("n/3", 12), det("pt/3", 100), base.with_record("a2")),
    ]
    good = records[1]
    blob = bytearray(bytes.fromhex(good["blob"]))
    blob[-1] ^= 1
    moved = dict(good["ad"], record_id="a2")
    record_failures = [
        dict(good, name="tag flipped", blob=blob.hex()),
        dict(
            good, name="moved to another record", ad=moved, ad_encoded=AssociatedData(**moved).encode().hex()
        ),
        dict(good, name="header version changed", blob="4b5302" + good["blob"][6:]),
    ]

    sk = dek("stream-key-1")
    stream_ad = AssociatedData("contoso", "contoso-prod", "files", "files", "img/logo.png").encode()
    plaintext = bytes(i % 251 for i in range(2 * 4096 + 100))
    out = io.BytesIO()
    encrypt_stream(
        sk,
        io.BytesIO(plaintext),
        out,
        stream_ad,
        4096,
        _salt=det("salt/1", 32),
        _nonce_prefix=det("prefix/1", 7),
    )
    ciphertext = out.getvalue()
    stream = {
        "name": "three segments of 4 KiB (last 100 bytes)",
        "key": sk.key.hex(),
        "dek_id": sk.id.hex(),
        "ad": stream_ad.hex(),
        "segment_size": 4096,
        "plaintext": plaintext.hex(),
        "ciphertext": ciphertext.hex(),
    }
    empty_out = io.BytesIO()
    encrypt_stream(
        sk, io.BytesIO(b""), empty_out, b"", 4096, _salt=det("salt/2", 32), _nonce_prefix=det("prefix/2", 7)
    )
    empty = dict(
        stream, name="empty file, empty AD", ad="", plaintext="", ciphertext=empty_out.getvalue().hex()
    )
    seg_hex = 2 * (4096 + 16)
    head_hex = 2 * 63
    stream_failures = [
        dict(
            stream,
            name="truncated at a segment boundary",
            ciphertext=ciphertext.hex()[: head_hex + 2 * seg_hex],
        ),
        dict(
            stream,
            name="segments 0 and 1 swapped",
            ciphertext=ciphertext.hex()[:head_hex]
            + ciphertext.hex()[head_hex + seg_hex : head_hex + 2 * seg_hex]
            + ciphertext.hex()[head_hex : head_hex + seg_hex]
            + ciphertext.hex()[head_hex + 2 * seg_hex :],
        ),
    ]
    for failure in stream_failures:
        del failure["plaintext"]
    return {
        "format": "keyshift-known-answer-vectors",
        "version": 1,
        "doc": "docs/FORMAT.md",
        "records": records,
        "record_failures": record_failures,
        "streams": [stream, empty],
        "stream_failures": stream_failures,
    }


def render() -> str:
    return json.dumps(build(), indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
