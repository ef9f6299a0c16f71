"""Record values and names: validation of tables, ids and expected versions, the value encoding,
the `Record` a read returns, and the per-table associated data of the record store.

A value is a JSON document (dict, list, str, number, bool, None) or bytes; the plaintext starts
with a one-byte type tag (b"J" JSON in UTF-8, b"B" raw bytes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyshift.crypto.records import AssociatedData
from keyshift.errors import IntegrityError, UsageError
from keyshift.timefmt import iso_z

TABLE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
ID_RE = re.compile(r"^[A-Za-z0-9_.:@+=~-]{1,512}\Z")
TAG_JSON = b"J"
TAG_BYTES = b"B"
MAX_VALUE_BYTES = 16 << 20
MAX_VERSION = (1 << 63) - 1  # versions are signed 64-bit integers in the database


def validate_version(version: object, *, minimum: int = 0) -> int:
    """An expected version: an integer from `minimum` to 2^63 - 1, else UsageError (exit 2)."""
    if isinstance(version, bool) or not isinstance(version, int) or not minimum <= version <= MAX_VERSION:
        raise UsageError(
            f"expected_version must be an integer from {minimum} to {MAX_VERSION}", code="invalid_version"
        )
    return version


class TableAd:
    """Associated data of many records of one table, encoding the shared fields only once.

    Equal to `AssociatedData(tenant, environment, store, table, id)` field for field and byte for
    byte (docs/FORMAT.md: each field is a u32 big-endian length and its UTF-8 bytes, in order); it
    only skips re-encoding the four fields every record of the table shares.
    """

    __slots__ = ("base", "prefix")

    def __init__(self, base: AssociatedData) -> None:
        self.base = base
        encoded = base.encode()
        empty_id = len(base.record_id.encode("utf-8")) + 4
        self.prefix = encoded[:-empty_id] if empty_id else encoded

    def with_record(self, record_id: str) -> AssociatedData:
        raw = record_id.encode("utf-8")
        if len(raw) > 512:  # record ids are validated first; never build a different encoding
            return self.base.with_record(record_id)
        ad = object.__new__(AssociatedData)
        b = self.base
        for name, value in (
            ("tenant", b.tenant),
            ("environment", b.environment),
            ("store", b.store),
            ("collection", b.collection),
            ("record_id", record_id),
            ("_encoded", self.prefix + len(raw).to_bytes(4, "big") + raw),
        ):
            object.__setattr__(ad, name, value)
        return ad


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    value: Any
    version: int
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, bytes):
            value = {"$bytes": value.hex()}
        return {
            "id": self.id,
            "version": self.version,
            "updated_at": iso_z(self.updated_at),
            "value": value,
        }


_new_record = object.__new__
_slots: dict[str, Any] = dict(vars(Record))  # the slot descriptors of the four fields
_set_id, _set_value, _set_version, _set_updated_at = (
    _slots[name].__set__ for name in ("id", "value", "version", "updated_at")
)
del _slots


def make_record(record_id: str, value: Any, version: int, updated_at: datetime) -> Record:
    """`Record(record_id, value, version, updated_at)` for the read paths that build thousands:
    the same frozen object, its slots filled directly (a third of the generated `__init__`'s
    cost, which goes through `object.__setattr__` per field)."""
    record: Record = _new_record(Record)
    _set_id(record, record_id)
    _set_value(record, value)
    _set_version(record, version)
    _set_updated_at(record, updated_at)
    return record


def validate_table(table: object) -> str:
    if not isinstance(table, str) or not TABLE_RE.match(table):
        raise UsageError(
            f"invalid table name {table!r}: 1-128 letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-')",
            code="invalid_table",
        )
    return table


def validate_id(record_id: object) -> str:
    if not isinstance(record_id, str) or not ID_RE.match(record_id) or record_id in (".", ".."):
        raise UsageError(
            f"invalid record id {record_id!r}: 1-512 letters, digits or _ . : @ + = ~ - "
            "(no '/', backslash, NUL)",
            code="invalid_id",
        )
    return record_id


# What `json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))` builds per
# call, built once (the encoder keeps no state between calls).
_to_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_BYTES_TYPES = (bytes, bytearray, memoryview)


def encode_value(value: Any) -> bytes:
    if isinstance(value, _BYTES_TYPES):
        data = TAG_BYTES + bytes(value)
    else:
        try:
            text = _to_json(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"value is not JSON-serialisable: {exc}", code="invalid_value") from None
        try:
            data = TAG_JSON + text.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate (e.g. "\ud800") has no UTF-8 form. The codec's message would quote
            # the character and its position in the value: say only what is wrong.
            raise UsageError(
                "value holds text that is not valid Unicode (a lone surrogate)", code="invalid_value"
            ) from None
    if len(data) > MAX_VALUE_BYTES:
        raise UsageError(f"a record value holds at most {MAX_VALUE_BYTES} bytes", code="value_too_large")
    return data


# `json.loads(text)` without its per-call checks (a value is never read from text with a BOM).
decode_json = json.JSONDecoder().decode


def decode_value(data: bytes) -> Any:
    tag, body = data[:1], data[1:]
    if tag == TAG_BYTES:
        return body
    if tag == TAG_JSON:
        return decode_json(body.decode("utf-8"))  # always UTF-8: no encoding detection
    raise IntegrityError("unknown value type")
