"""The SDK sits on the same service boundary: its data-plane calls are counted and timed too."""

from __future__ import annotations

from pathlib import Path

import pytest

import keyshift
from keyshift.control import environments, tenants
from keyshift.errors import NotFoundError
from keyshift.observability.exposition import render

from .support import delta, parse


def test_sdk_calls_are_counted_by_store_operation_and_outcome(home: Path, db_url: str | None) -> None:
    with keyshift.open(home=home, database_url=db_url) as ks:
        tenants.create_tenant(ks.runtime, "contoso")
        environments.create_environment(ks.runtime, "contoso", "contoso-dev", env_type="developer")
        env = ks.environment("contoso-dev")
        before = parse(render().decode())
        env.records.put("t", "a", {"v": 1})
        env.records.put_many("t", [("b", 2), ("c", 3)])
        assert env.records.get("t", "a") == {"v": 1}
        with pytest.raises(NotFoundError):
            env.records.get("t", "missing")
        env.audit.append({"action": "x"})
        env.files.put("d/f.txt", b"hello")
        assert env.files.get("d/f.txt") == b"hello"
        after = parse(render().decode())
    name = "keyshift_data_requests_total"
    assert delta(before, after, name, store="records", operation="put", outcome="ok") == 1
    assert delta(before, after, name, store="records", operation="put_many", outcome="ok") == 1
    assert delta(before, after, name, store="records", operation="get", outcome="ok") == 1
    assert delta(before, after, name, store="records", operation="get", outcome="not_found") == 1
    # `get` calls `get_record` inside the store: counted once, as the outer call.
    assert delta(before, after, name, store="records", operation="get_record", outcome="ok") == 0
    assert delta(before, after, name, store="audit", operation="append", outcome="ok") == 1
    assert delta(before, after, name, store="files", operation="put", outcome="ok") == 1
    assert delta(before, after, name, store="files", operation="get", outcome="ok") == 1
    assert delta(before, after, "keyshift_data_request_seconds_count", store="records", operation="get") == 2
