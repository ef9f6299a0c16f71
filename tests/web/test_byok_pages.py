"""Legacy BYOK from the tenant page and the API (TestClient, SQLite and PostgreSQL): generate
(downloaded once), activate, lock with the key file, import the same key again, unlock — operator
only; refusals say why and change nothing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.clock import FixedClock
from keyshift.control import byok, environments, tenants
from keyshift.control.pkcs12_files import fingerprint, load_rsa_key
from keyshift.runtime import Runtime

from .webclient import alert, client_for, sign_in, token

PW = "correct horse battery"


@pytest.fixture
def web(rt: Runtime) -> Iterator[TestClient]:
    yield from client_for(rt)


def _keys(rt: Runtime) -> dict[str, str]:
    return {k["name"]: k["state"] for k in tenants.show_tenant(rt, "fab")["byok_keys"]}


def _post(web: TestClient, path: str, **kw: Any) -> Any:
    return web.post(path, follow_redirects=False, **kw)


def test_byok_generate_activate_lock_import_unlock_from_the_tenant_page(
    web: TestClient, rt: Runtime, clock: FixedClock
) -> None:
    t = tenants.create_tenant(rt, "fab", byok=True)
    env = environments.create_environment(rt, t["id"], "fab-prod")
    base = f"/tenants/{t['id']}/byok"
    csrf = sign_in(web, token(rt, "operator"))
    page = web.get(f"/tenants/{t['id']}").text
    assert 'id="byok-generate"' in page and 'id="byok-import"' in page
    # Generate: the response is the PKCS#12 file, opening with the password, of the listed key.
    r = _post(web, f"{base}/keys/generate", data={"name": "k1", "region": "eu", "password": PW, "csrf": csrf})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-pkcs12"
    assert r.headers["content-disposition"] == 'attachment; filename="k1.pfx"'
    pfx = r.content
    key = load_rsa_key(pfx, PW.encode(), "download")
    listed = tenants.show_tenant(rt, "fab")["byok_keys"]
    assert [(k["name"], k["state"], k["fingerprint"]) for k in listed] == [
        ("k1", "available", fingerprint(key))
    ]
    # A short password is refused, nothing added.
    r = _post(
        web, f"{base}/keys/generate", data={"name": "k2", "region": "eu", "password": "short", "csrf": csrf}
    )
    assert r.status_code == 400 and "at least 8 characters" in alert(r.text)
    assert _keys(rt) == {"k1": "available"}
    # Activate, then put the environment on it.
    r = _post(web, f"{base}/keys/k1/activate", data={"csrf": csrf})
    assert r.status_code == 303 and _keys(rt) == {"k1": "active"}
    byok.apply(rt, "fab-prod")
    # Lock: refused within 72 h of the key change, with the wrong name or password; nothing changes.
    files = {"file": ("k1.pfx", pfx, "application/x-pkcs12")}
    lock = {"password": PW, "confirm": "fab", "csrf": csrf}
    r = _post(web, f"{base}/lock", data=lock, files=files)
    assert r.status_code == 409 and "72 hours" in alert(r.text)
    clock.advance(hours=73)
    r = _post(web, f"{base}/lock", data={**lock, "confirm": "fabx"}, files=files)
    assert r.status_code == 409 and "type the tenant's name" in alert(r.text)  # confirmation_mismatch
    r = _post(web, f"{base}/lock", data={**lock, "password": "Tr0ub4dor&3"}, files=files)
    assert r.status_code == 400 and "wrong password" in alert(r.text) and "Tr0ub4dor" not in r.text
    r = _post(web, f"{base}/lock", data={k: v for k, v in lock.items() if k != "csrf"}, files=files)
    assert r.status_code == 403
    assert environments.show_environment(rt, "fab-prod")["state"] == "enabled"
    r = _post(web, f"{base}/lock", data=lock, files=files)
    assert r.status_code == 303
    assert environments.show_environment(rt, "fab-prod")["state"] == "locked"
    assert tenants.show_tenant(rt, "fab")["locked_at"] is not None and _keys(rt) == {}
    page = web.get(f"/tenants/{t['id']}").text
    assert "is <strong>locked</strong>" in page and 'id="byok-unlock"' in page
    # Import the same key again (an upload), activate it, unlock.
    r = _post(
        web,
        f"{base}/keys/import",
        data={"name": "k1-again", "region": "eu", "password": PW, "csrf": csrf},
        files=files,
    )
    assert r.status_code == 303 and _keys(rt) == {"k1-again": "available"}
    r = _post(web, f"{base}/keys/k1-again/activate", data={"csrf": csrf})
    assert r.status_code == 303
    r = _post(web, f"{base}/unlock", data={"environment": env["id"], "csrf": csrf})
    assert r.status_code == 303
    assert environments.show_environment(rt, "fab-prod")["state"] == "enabled"
    assert tenants.show_tenant(rt, "fab")["locked_at"] is None


def test_byok_actions_are_the_operators(web: TestClient, rt: Runtime) -> None:
    t = tenants.create_tenant(rt, "fab", byok=True)
    for role in ("tenant_admin", "reader"):
        csrf = sign_in(web, token(rt, role, "fab"))
        page = web.get(f"/tenants/{t['id']}").text
        assert 'id="byok-actions"' not in page, role
        data = {"name": "k1", "region": "eu", "password": PW, "csrf": csrf}
        r = _post(web, f"/tenants/{t['id']}/byok/keys/generate", data=data)
        assert r.status_code == 403 and "may not change" in alert(r.text), role
        r = _post(web, f"/tenants/{t['id']}/byok/unlock", data={"csrf": csrf})
        assert r.status_code == 403, role
    assert _keys(rt) == {}


def test_byok_api_routes(web: TestClient, rt: Runtime) -> None:
    t = tenants.create_tenant(rt, "fab", byok=True)
    tenants.create_tenant(rt, "other")
    op = {"Authorization": f"Bearer {token(rt, 'operator')}"}
    admin = {"Authorization": f"Bearer {token(rt, 'tenant_admin', 'fab')}"}
    other = {"Authorization": f"Bearer {token(rt, 'tenant_admin', 'other')}"}
    base = f"/api/v1/tenants/{t['id']}/byok"
    body = {"name": "k1", "region": "eu", "password": PW}
    r = web.post(f"{base}/keys/generate", json=body, headers=admin)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    r = web.post(f"{base}/keys/generate", json=body, headers=op)
    assert r.status_code == 201, r.text
    got = r.json()
    pfx = base64.b64decode(got["pkcs12"])
    assert got["key"]["fingerprint"] == fingerprint(load_rsa_key(pfx, PW.encode(), "response"))
    assert got["key"]["created_at"].endswith("Z")
    listed = web.get(f"{base}/keys", headers=admin)  # the tenant's admin may read
    assert listed.status_code == 200 and [k["name"] for k in listed.json()] == ["k1"]
    assert web.get(f"{base}/keys", headers=other).status_code == 404
    # Import: not base64, wrong password, the same key again -> refused, nothing added.
    imp = {"name": "k2", "region": "eu", "password": PW, "pkcs12": "!!!"}
    assert web.post(f"{base}/keys/import", json=imp, headers=op).status_code == 422
    imp["pkcs12"] = base64.b64encode(b"\x30" + b"x" * 40).decode()
    r = web.post(f"{base}/keys/import", json=imp, headers=op)
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_pkcs12"
    imp["pkcs12"] = got["pkcs12"]
    r = web.post(f"{base}/keys/import", json={**imp, "password": "Tr0ub4dor&3"}, headers=op)
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_password"
    assert "Tr0ub4dor" not in r.text  # the password is never echoed
    r = web.post(f"{base}/keys/import", json=imp, headers=op)
    assert r.status_code == 409 and r.json()["error"]["code"] == "duplicate_key"
    assert _keys(rt) == {"k1": "available"}
    r = web.post(f"{base}/keys/k1/activate", headers=op)
    assert r.status_code == 200 and r.json()["state"] == "active"
    r = web.post(f"{base}/lock", json={"pkcs12": got["pkcs12"], "password": PW, "confirm": "fab"}, headers=op)
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_changed_recently"
    r = web.post(f"{base}/unlock", json={}, headers=op)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_locked"
