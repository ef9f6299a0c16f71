"""Data plane over HTTP: records, audit events, streamed files — with a service token."""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.control import environments, tenants, tokens
from keyshift.runtime import Runtime

from .conftest import bearer


@pytest.fixture
def svc(rt: Runtime) -> dict[str, Any]:
    t = tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, t["id"], "contoso-prod")
    token = tokens.create_token(rt, "service", envs=[env["id"]])["token"]
    return {"env": env, "headers": bearer(token), "base": f"/api/v1/environments/{env['name']}"}


def test_records_round_trip_with_compare_and_swap(client: TestClient, svc: dict[str, Any]) -> None:
    base, h = svc["base"], svc["headers"]
    r = client.put(f"{base}/records/accounts/a1", json={"value": {"name": "Fabrikam"}}, headers=h)
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    got = client.get(f"{base}/records/accounts/a1", headers=h).json()
    assert got["value"] == {"name": "Fabrikam"} and got["version"] == version
    stale = client.put(
        f"{base}/records/accounts/a1", json={"value": 1, "expected_version": version + 5}, headers=h
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"]
    assert client.get(f"{base}/records/accounts/a1", headers=h).json()["value"] == {"name": "Fabrikam"}
    surrogate = client.put(
        f"{base}/records/accounts/a1",
        content=b'{"value": {"name": "\\ud800"}}',
        headers={**h, "content-type": "application/json"},
    )
    assert surrogate.status_code == 422 and surrogate.json()["error"]["code"] == "invalid_request"
    assert client.get(f"{base}/records/accounts/a1", headers=h).json()["value"] == {"name": "Fabrikam"}
    listed = client.get(f"{base}/records/accounts", headers=h).json()
    assert [x["id"] for x in listed] == ["a1"]
    assert client.delete(f"{base}/records/accounts/a1", headers=h).status_code == 200
    missing = client.get(f"{base}/records/accounts/a1", headers=h)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"code", "message"}


def test_audit_events_append_and_query(client: TestClient, svc: dict[str, Any]) -> None:
    base, h = svc["base"], svc["headers"]
    ids = [client.post(f"{base}/audit", json={"event": {"n": i}}, headers=h).json()["id"] for i in range(3)]
    events = client.get(f"{base}/audit?limit=10", headers=h).json()
    assert [e["id"] for e in events] == ids and [e["event"]["n"] for e in events] == [0, 1, 2]


def test_files_stream_up_and_down(client: TestClient, svc: dict[str, Any]) -> None:
    base, h = svc["base"], svc["headers"]
    blob = os.urandom(3 * (1 << 20) + 123)

    def body() -> Any:
        for i in range(0, len(blob), 100_000):
            yield blob[i : i + 100_000]

    r = client.put(f"{base}/files/img/logo.png", content=body(), headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["size"] == len(blob)
    with client.stream("GET", f"{base}/files/img/logo.png", headers=h) as resp:
        assert resp.status_code == 200
        digest = hashlib.sha256()
        for chunk in resp.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(blob).hexdigest()
    assert client.get(f"{base}/files?prefix=img", headers=h).json() == [
        {"path": "img/logo.png", "size": len(blob)}
    ]
    bad = client.put(f"{base}/files/..%2Fescape", content=b"x", headers=h)
    assert bad.status_code in (400, 404) and "error" in bad.json()
    assert client.get(f"{base}/files", headers=h).json() == [{"path": "img/logo.png", "size": len(blob)}]


def test_disabled_environment_answers_423(client: TestClient, rt: Runtime, svc: dict[str, Any]) -> None:
    from keyshift.control import revocation

    base, h = svc["base"], svc["headers"]
    assert client.put(f"{base}/records/t/x", json={"value": 1}, headers=h).status_code == 200
    revocation.disable_environment(rt, svc["env"]["id"], "operator action", source="test")
    from keyshift.stores.envstate import env_states

    env_states(rt).invalidate(svc["env"]["id"])
    r = client.get(f"{base}/records/t/x", headers=h)
    assert r.status_code == 423 and r.json()["error"]["code"].startswith("environment_")


def test_expected_version_past_int64_is_422_and_full_pages_name_the_next(
    client: TestClient, svc: dict[str, Any]
) -> None:
    base, h = svc["base"], svc["headers"]
    assert client.put(f"{base}/records/big/a", json={"value": 1}, headers=h).status_code == 200
    assert client.put(f"{base}/records/big/b", json={"value": 2}, headers=h).status_code == 200
    for big in (1 << 63, 1 << 64):
        r = client.put(f"{base}/records/big/a", json={"value": 9, "expected_version": big}, headers=h)
        assert r.status_code == 422, r.text
        r = client.delete(f"{base}/records/big/a?expected_version={big}", headers=h)
        assert r.status_code == 422, r.text
    edge = client.put(
        f"{base}/records/big/a", json={"value": 9, "expected_version": (1 << 63) - 1}, headers=h
    )
    assert edge.status_code == 409
    assert client.get(f"{base}/records/big/a", headers=h).json()["value"] == 1
    page = client.get(f"{base}/records/big?limit=1", headers=h)
    assert [x["id"] for x in page.json()] == ["a"] and page.headers["X-Next-After"] == "a"
    rest = client.get(f"{base}/records/big?limit=5&after=a", headers=h)
    assert [x["id"] for x in rest.json()] == ["b"] and "X-Next-After" not in rest.headers


def _corrupt_last_segment(rt: Runtime, env_id: str, path: str) -> None:
    from keyshift.stores.file_backends import backend

    target = backend(rt, "file_storage").target_path(env_id, path)  # type: ignore[attr-defined]
    raw = bytearray(target.read_bytes())
    raw[-5] ^= 0x01
    target.write_bytes(bytes(raw))


def test_file_download_sends_exact_length_so_a_truncated_body_shows(
    rt: Runtime, app: Any, svc: dict[str, Any]
) -> None:
    base, h = svc["base"], svc["headers"]
    blob = os.urandom(2 * (1 << 20) + 4321)  # three segments: the last one fails
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.put(f"{base}/files/big.bin", content=blob, headers=h).status_code == 200
        ok = client.get(f"{base}/files/big.bin", headers=h)
        assert ok.headers["content-length"] == str(len(blob)) and ok.content == blob
        empty = client.put(f"{base}/files/empty", content=b"", headers=h)
        assert empty.status_code == 200
        assert client.get(f"{base}/files/empty", headers=h).headers["content-length"] == "0"
        _corrupt_last_segment(rt, svc["env"]["id"], "big.bin")
        got = bytearray()
        announced = -1
        with contextlib.suppress(Exception), client.stream("GET", f"{base}/files/big.bin", headers=h) as resp:
            # (the transport may itself notice the short body and raise)
            assert resp.status_code == 200
            announced = int(resp.headers["content-length"])
            for chunk in resp.iter_raw():
                got += chunk
    assert announced == len(blob)
    assert len(got) < announced and bytes(got) == blob[: len(got)]


def test_paths_that_collided_in_the_directory_store_are_two_files(
    client: TestClient, svc: dict[str, Any]
) -> None:
    base, h = svc["base"], svc["headers"]
    for path, body in (("coll", b"one"), ("coll.ksf/y", b"two"), (".tmp-0123456789abcdef.part", b"three")):
        r = client.put(f"{base}/files/{path}", content=body, headers=h)
        assert r.status_code == 200, r.text
    assert client.get(f"{base}/files/coll", headers=h).content == b"one"
    assert client.get(f"{base}/files/coll.ksf/y", headers=h).content == b"two"
    listed = [f["path"] for f in client.get(f"{base}/files", headers=h).json()]
    assert listed == [".tmp-0123456789abcdef.part", "coll", "coll.ksf/y"]
