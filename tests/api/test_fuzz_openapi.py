"""Schemathesis against the OpenAPI document: no 5xx, responses match the documented schemas, and
status codes and content types are documented — over every operation, a bounded number of examples,
as an operator (who may call everything), on SQLite and on PostgreSQL (stricter about input, e.g. NUL)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from keyshift.api.app import create_app
from keyshift.control import tokens
from keyshift.runtime import Runtime

from .world import build_world

EXAMPLES = int(os.environ.get("KEYSHIFT_FUZZ_EXAMPLES", "4"))  # a longer run: KEYSHIFT_FUZZ_EXAMPLES=50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzz_app(rt: Runtime) -> Any:
    build_world(rt)  # real objects exist, so some generated names hit them
    app = create_app(rt)
    app.state.fuzz_token = tokens.create_token(rt, "operator")["token"]
    return app


def test_openapi_fuzz_finds_no_server_error_or_schema_violation(fuzz_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    headers = {"Authorization": f"Bearer {fuzz_app.state.fuzz_token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 35
    failures: list[str] = []
    calls = 0
    statuses: dict[str, set[int]] = {}

    for op in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            statuses.setdefault(case.operation.label, set()).add(response.status_code)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{op.label}: {type(exc).__name__}: {str(exc)[:800]}")
    assert not failures, "\n\n".join(failures)
    assert calls >= len(operations) * 3
    # The probes were authenticated and reached real handlers, not just the auth wall.
    assert all(401 not in codes for codes in statuses.values())
    ok_ops = [label for label, codes in statuses.items() if any(200 <= c < 300 for c in codes)]
    assert len(ok_ops) >= 10, statuses
