"""The service boundary's metrics proxy wraps each operation once, and follows a replaced one."""

from __future__ import annotations

from typing import Any

import pytest

from keyshift.errors import NotFoundError
from keyshift.observability.dataplane import instrument
from keyshift.observability.exposition import render

from .support import delta, parse


class _Store:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def get(self, table: str, record_id: str) -> Any:
        self.calls.append(f"get {table}/{record_id}")
        if record_id == "missing":
            raise NotFoundError("no such record", code="record_not_found")
        return {"id": record_id}

    def helper(self) -> str:
        return "not an operation"


def test_an_operation_is_wrapped_once_and_every_call_is_counted() -> None:
    target = _Store()
    proxy = instrument(target, "records")
    assert proxy.get is proxy.get  # built once, not per attribute access
    assert proxy.helper() == "not an operation"  # other attributes pass through unwrapped
    before = parse(render().decode())
    for _ in range(3):
        assert proxy.get("t", "a") == {"id": "a"}
    with pytest.raises(NotFoundError):
        proxy.get("t", "missing")
    after = parse(render().decode())
    name = "keyshift_data_requests_total"
    assert delta(before, after, name, store="records", operation="get", outcome="ok") == 3
    assert delta(before, after, name, store="records", operation="get", outcome="not_found") == 1
    assert target.calls == ["get t/a"] * 3 + ["get t/missing"]


def test_a_replaced_operation_is_the_one_called(monkeypatch: pytest.MonkeyPatch) -> None:
    target = _Store()
    proxy = instrument(target, "records")
    assert proxy.get("t", "a") == {"id": "a"}  # the wrapper of the original is cached now
    monkeypatch.setattr(target, "get", lambda table, record_id: "replaced")
    before = parse(render().decode())
    assert proxy.get("t", "a") == "replaced"
    after = parse(render().decode())
    assert (
        delta(before, after, "keyshift_data_requests_total", store="records", operation="get", outcome="ok")
        == 1
    )
    monkeypatch.undo()
    assert proxy.get("t", "b") == {"id": "b"}
