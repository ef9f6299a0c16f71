"""The value encoding and the fast Record constructor of the read paths keep their contracts."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from keyshift.errors import UsageError
from keyshift.stores.record_codec import Record, decode_value, encode_value, make_record

VALUES: list[Any] = [
    {"name": "Fabrikam", "n": 1, "x": 1.5, "ok": True, "none": None, "tags": ["a", "b"]},
    {"ünïcødé": "日本語 ✓", "emoji": "\U0001f510", "nested": {"deep": [1, [2, [3]]]}},
    [1, 2.25, -3e300, "s"],
    "plain text",
    12345678901234567890,
    0.1,
    None,
    {},
]


@pytest.mark.parametrize("value", VALUES)
def test_json_values_encode_exactly_as_the_documented_compact_form(value: Any) -> None:
    # docs/FORMAT.md: tag b"J" + compact JSON (no spaces, UTF-8, not ASCII-escaped)
    expected = b"J" + json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    assert encode_value(value) == expected
    assert decode_value(encode_value(value)) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, {"x": -math.inf}, {1, 2}, object(), {"k": b"x"}])
def test_values_json_cannot_hold_are_usage_errors(value: Any) -> None:
    with pytest.raises(UsageError) as err:
        encode_value(value)
    assert err.value.code == "invalid_value" and err.value.exit_code == 2


def test_encoding_one_value_leaves_no_state_for_the_next() -> None:
    with pytest.raises(UsageError):
        encode_value({"a": [1, math.nan]})  # fails midway through the shared encoder
    assert encode_value({"a": [1, 2]}) == b'J{"a":[1,2]}'
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(UsageError):
        encode_value(cyclic)
    assert encode_value([[]]) == b"J[[]]"


def test_make_record_is_the_same_frozen_record() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    fast = make_record("r1", {"v": 1}, 7, at)
    assert type(fast) is Record
    assert fast == Record("r1", {"v": 1}, 7, at)
    assert (fast.id, fast.value, fast.version, fast.updated_at) == ("r1", {"v": 1}, 7, at)
    assert fast.to_dict() == {
        "id": "r1",
        "version": 7,
        "updated_at": at.isoformat().replace("+00:00", "Z"),
        "value": {"v": 1},
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.version = 8  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["r1\n", "r1\r\n", "\nr1"])
def test_record_ids_and_tables_with_a_line_break_are_refused(bad: str) -> None:
    from keyshift.stores.record_codec import validate_id, validate_table

    for check in (validate_id, validate_table):
        with pytest.raises(UsageError) as exc:
            check(bad)
        assert exc.value.exit_code == 2
    assert validate_id("r1") == "r1" and validate_table("r1") == "r1"
