"""Vaults and keys pages (TestClient, SQLite and PostgreSQL): who may see and change what, every
change through the audited service layer, flash messages, error pages linking back, CSRF."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import policies, tenants, tokens, vaults
from keyshift.runtime import Runtime

from .pagekit import audit, back_link_of, csrf_of, flash_of, follow, login


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def world(rt: Runtime) -> dict[str, Any]:
    a = tenants.create_tenant(rt, "alpha")
    b = tenants.create_tenant(rt, "beta")
    vaults.create_local_vault(
        rt, "alpha-vault", soft_delete_days=30, purge_protection=True, tenant_id=a["id"]
    )
    vaults.create_local_vault(rt, "beta-vault", tenant_id=b["id"])
    vaults.create_key(rt, "alpha-vault", "cmk", "RSA", 2048)
    vaults.create_key(rt, "beta-vault", "beta-secret-key", "RSA", 2048)
    return {
        "alpha": a,
        "beta": b,
        "admin": tokens.create_token(rt, "tenant_admin", tenant="alpha")["token"],
        "reader": tokens.create_token(rt, "reader", tenant="alpha")["token"],
        "operator": tokens.create_token(rt, "operator")["token"],
    }


def test_vault_list_and_page_show_settings_and_reachability_in_scope(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["admin"])
    html = client.get("/vaults").text
    assert "alpha-vault" in html and "reachable" in html
    # Another tenant's vault and the platform vault are not listed for a tenant admin.
    assert "beta-vault" not in html and rt.settings.platform_vault not in html
    page = client.get("/vaults/alpha-vault").text
    assert '<dd id="vault-kind">local</dd>' in page
    assert '<dd id="vault-soft-delete">30 days</dd>' in page
    assert '<dd id="vault-purge-protection">on</dd>' in page
    assert 'badge state-enabled">reachable' in page and "cmk" in page
    # Another tenant's vault and its key answer like missing ones, naming nothing of beta.
    for path in (
        "/vaults/beta-vault",
        "/vaults/beta-vault/keys/beta-secret-key",
        f"/vaults/{rt.settings.platform_vault}",
    ):
        r = client.get(path)
        assert r.status_code == 404 and "beta-secret-key" not in r.text
        assert back_link_of(r.text) == "/vaults"
    # The operator sees every vault, the platform vault included.
    login(client, world["operator"])
    html = client.get("/vaults").text
    assert "beta-vault" in html and rt.settings.platform_vault in html


def test_tenant_admin_creates_rotates_disables_and_grants_through_the_audited_service(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["admin"])
    token = csrf_of(client.get("/vaults/alpha-vault").text)
    r = client.post(
        "/vaults/alpha-vault/keys",
        data={"name": "cmk2", "type": "RSA", "size": "3072", "csrf": token},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/vaults/alpha-vault/keys/cmk2"
    page = follow(client, r).text
    assert flash_of(page) is not None and flash_of(page).startswith("Key cmk2 created (RSA 3072")
    assert client.get("/vaults/alpha-vault/keys/cmk2").text.count('id="flash"') == 0  # shown once
    first = vaults.show_key(rt, "alpha-vault", "cmk2")["current_version"]
    assert [e.outcome for e in audit(rt, "key.create") if e.target_id == "alpha-vault/cmk2"] == ["ok"]

    page = follow(
        client,
        client.post("/vaults/alpha-vault/keys/cmk2/rotate", data={"csrf": token}, follow_redirects=False),
    ).text
    second = vaults.show_key(rt, "alpha-vault", "cmk2")["current_version"]
    assert second != first and flash_of(page) == f"Key cmk2 rotated: the current version is now {second}."
    assert second in page and first in page  # both versions listed

    # Disable one version, then the key; enable again.
    follow(
        client,
        client.post(
            "/vaults/alpha-vault/keys/cmk2/disable",
            data={"csrf": token, "version": first},
            follow_redirects=False,
        ),
    )
    versions = {v["version"]: v["enabled"] for v in vaults.show_key(rt, "alpha-vault", "cmk2")["versions"]}
    assert versions == {first: False, second: True}
    page = follow(
        client,
        client.post("/vaults/alpha-vault/keys/cmk2/disable", data={"csrf": token}, follow_redirects=False),
    ).text
    assert vaults.show_key(rt, "alpha-vault", "cmk2")["enabled"] is False and "Key cmk2 disabled." in page
    follow(
        client,
        client.post("/vaults/alpha-vault/keys/cmk2/enable", data={"csrf": token}, follow_redirects=False),
    )
    assert vaults.show_key(rt, "alpha-vault", "cmk2")["enabled"] is True

    # Grant a policy identity get/wrapKey/unwrapKey, then revoke it.
    r = client.post(
        "/vaults/alpha-vault/keys/cmk2/grants",
        data={
            "identity": "pol-0123456789abcdef",
            "permissions": ["get", "wrapKey", "unwrapKey"],
            "csrf": token,
        },
        follow_redirects=False,
    )
    page = follow(client, r).text
    assert flash_of(page) == "Granted get, unwrapKey, wrapKey on key cmk2 to pol-0123456789abcdef."
    grants = vaults.show_key(rt, "alpha-vault", "cmk2")["grants"]
    assert grants == [{"identity": "pol-0123456789abcdef", "permissions": ["get", "unwrapKey", "wrapKey"]}]
    r = client.post(
        "/vaults/alpha-vault/keys/cmk2/grants/revoke",
        data={"identity": "pol-0123456789abcdef", "csrf": token},
        follow_redirects=False,
    )
    assert "Revoked the grant" in (flash_of(follow(client, r).text) or "")
    assert vaults.show_key(rt, "alpha-vault", "cmk2")["grants"] == []
    for action in ("key.rotate", "key.disable", "key.enable", "key.grant", "key.revoke_grant"):
        rows = [e for e in audit(rt, action) if e.target_id == "alpha-vault/cmk2"]
        assert rows and all(e.principal.startswith("token:") and e.outcome == "ok" for e in rows), action


def test_bad_input_gets_an_error_page_linking_back_and_changes_nothing(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["admin"])
    token = csrf_of(client.get("/vaults/alpha-vault").text)
    before = vaults.show_key(rt, "alpha-vault", "cmk")
    r = client.post(
        "/vaults/alpha-vault/keys/cmk/grants",
        data={"identity": "pol-x", "permissions": ["decrypt"], "csrf": token},
    )
    assert r.status_code == 400 and "unknown permission" in r.text
    assert back_link_of(r.text) == "/vaults/alpha-vault/keys/cmk"
    r = client.post(
        "/vaults/alpha-vault/keys", data={"name": "weak", "type": "RSA", "size": "1024", "csrf": token}
    )
    assert r.status_code == 400 and "invalid size 1024" in r.text
    assert back_link_of(r.text) == "/vaults/alpha-vault"
    r = client.post("/vaults/alpha-vault/keys/nope/rotate", data={"csrf": token})
    assert r.status_code == 404 and back_link_of(r.text) == "/vaults/alpha-vault"
    assert vaults.show_key(rt, "alpha-vault", "cmk") == before
    assert [k["name"] for k in vaults.list_keys(rt, "alpha-vault")] == ["cmk"]
    mine = [e.outcome for e in audit(rt, "key.grant") if e.principal.startswith("token:")]
    assert mine == ["error"]  # the refusal is audited too


@pytest.mark.parametrize("csrf_value", [None, "0" * 64])
def test_key_actions_without_a_valid_csrf_token_are_refused(
    client: TestClient, rt: Runtime, world: dict[str, Any], csrf_value: str | None
) -> None:
    login(client, world["admin"])
    before = vaults.show_key(rt, "alpha-vault", "cmk")
    extra = {} if csrf_value is None else {"csrf": csrf_value}
    for path, data in [
        ("/vaults/alpha-vault/keys/cmk/rotate", {}),
        ("/vaults/alpha-vault/keys/cmk/disable", {}),
        ("/vaults/alpha-vault/keys/cmk/grants", {"identity": "pol-x", "permissions": "get"}),
        ("/vaults/alpha-vault/keys", {"name": "k2", "type": "AES", "size": "256"}),
    ]:
        r = client.post(path, data={**data, **extra})
        assert r.status_code == 403 and "csrf_failed" in r.text, path
    assert vaults.show_key(rt, "alpha-vault", "cmk") == before
    assert len(vaults.list_keys(rt, "alpha-vault")) == 1


def test_reader_sees_vaults_and_keys_but_no_forms_and_cannot_change_them(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["reader"])
    assert client.get("/vaults").status_code == 200
    page = client.get("/vaults/alpha-vault/keys/cmk").text
    assert "Key cmk" in page and 'action="/vaults/alpha-vault/keys/cmk/rotate"' not in page
    assert "Create a key" not in client.get("/vaults/alpha-vault").text
    token = csrf_of(page)  # the sign-out form's token: valid for this session
    before = vaults.show_key(rt, "alpha-vault", "cmk")
    r = client.post("/vaults/alpha-vault/keys/cmk/rotate", data={"csrf": token})
    assert r.status_code == 403 and "permission_denied" in r.text
    assert vaults.show_key(rt, "alpha-vault", "cmk") == before


def test_policy_form_offers_the_vaults_keys_and_refuses_a_key_outside_it(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    login(client, world["admin"])
    page = client.get("/policies").text
    assert '<select id="pol-key" name="key" required' in page
    assert '<option value="cmk" data-vault="alpha-vault">cmk</option>' in page
    assert "beta-secret-key" not in page  # only the tenant's vaults' keys
    token = csrf_of(page)
    form = {"tenant": "alpha", "name": "p1", "region": "eu", "vault": "alpha-vault", "csrf": token}
    r = client.post("/policies", data={**form, "key": "typo"})
    assert r.status_code == 404 and "key_not_found" in r.text and back_link_of(r.text) == "/policies"
    assert policies.list_policies(rt, tenant="alpha") == []
    r = client.post("/policies", data={**form, "key": "cmk"}, follow_redirects=False)
    page = follow(client, r).text
    assert (flash_of(page) or "").startswith("Policy p1 created.")
    identity = policies.list_policies(rt, tenant="alpha")[0]["identity"]
    assert f'href="/vaults/alpha-vault/keys/cmk?identity={identity}"' in page
    # The key page opened from that link has the identity filled in.
    assert f'value="{identity}"' in client.get(f"/vaults/alpha-vault/keys/cmk?identity={identity}").text


def test_flash_cookie_must_be_signed_by_the_server_and_favicon_is_served(
    client: TestClient, world: dict[str, Any]
) -> None:
    login(client, world["admin"])
    import base64

    forged = base64.urlsafe_b64encode(b"Transfer done").decode().rstrip("=") + "." + "0" * 64
    client.cookies.set("ks_flash", forged)
    assert flash_of(client.get("/vaults").text) is None
    r = client.get("/static/favicon.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get("/vaults").text


def test_new_pages_have_labels_one_heading_and_security_headers(
    client: TestClient, rt: Runtime, world: dict[str, Any]
) -> None:
    from .test_pages import _accessible

    login(client, world["operator"])
    page = client.post(
        "/tokens", data={"role": "reader", "csrf": csrf_of(client.get("/tokens").text)}
    )  # the page that shows a new token once
    assert page.status_code == 201
    _accessible(page.text)
    for path in ("/vaults", "/vaults/alpha-vault", "/vaults/alpha-vault/keys/cmk", "/tokens", "/policies"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert (
            r.headers["cache-control"] == "no-store"
            and "script-src 'self'" in r.headers["content-security-policy"]
        )
        _accessible(r.text)


def test_a_key_in_use_is_not_disabled_or_ungranted_from_the_page(client: TestClient, rt: Runtime) -> None:
    """The retirement gate holds on the pages too: key_in_use, a link back to the key, no change."""
    from keyshift.control import environments, health
    from keyshift.jobs.runner import Worker
    from keyshift.migrate import link

    t = tenants.create_tenant(rt, "contoso")
    env = environments.create_environment(rt, t["id"], "contoso-prod")
    vaults.create_local_vault(rt, "contoso-vault", purge_protection=True, tenant_id=t["id"])
    vaults.create_key(rt, "contoso-vault", "cmk", "RSA", 2048)
    pol = policies.create_policy(
        rt, t["id"], "cmk-eu", region=env["region"], vault="contoso-vault", key="cmk"
    )
    vaults.grant_key(rt, "contoso-vault", "cmk", pol["identity"], "get,wrapKey,unwrapKey")
    health.policy_health(rt, pol["id"])
    environments.set_managed(rt, env["id"], True)
    link.start_link(rt, pol["id"], env["id"])
    Worker(rt).run_once()
    from keyshift.stores.keys import data_keys
    from keyshift.stores.records import RecordStore

    RecordStore(rt, env["id"]).put("accounts", "a1", {"name": "n1"})  # data under the key
    data_keys(rt).flush()
    before = vaults.show_key(rt, "contoso-vault", "cmk")

    login(client, tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"])
    page = client.get("/vaults/contoso-vault/keys/cmk").text
    assert f'href="/policies/{pol["id"]}">cmk-eu</a>' in page  # the policy using the key
    token = csrf_of(page)
    for path, data in [
        ("/vaults/contoso-vault/keys/cmk/disable", {}),
        ("/vaults/contoso-vault/keys/cmk/grants/revoke", {"identity": pol["identity"]}),
    ]:
        r = client.post(path, data={**data, "csrf": token})
        assert r.status_code == 409 and "key_in_use" in r.text, path
        assert back_link_of(r.text) == "/vaults/contoso-vault/keys/cmk"
    assert vaults.show_key(rt, "contoso-vault", "cmk") == before
    assert environments.show_environment(rt, env["id"])["state"] == "enabled"


@pytest.mark.parametrize(
    ("method", "path", "code", "expected"),
    [
        ("POST", "/vaults/v1/keys/k1/rotate", "invalid_argument", "/vaults/v1/keys/k1"),
        ("POST", "/vaults/v1/keys/k1/rotate", "key_not_found", "/vaults/v1"),
        ("POST", "/vaults/v1/keys", "invalid_argument", "/vaults/v1"),
        ("GET", "/vaults/v1/keys/k1", "not_found", "/vaults/v1"),
        ("GET", "/vaults/v1", "vault_not_found", "/vaults"),
        ("POST", "/policies/pol_1/environments", "environment_not_found", "/policies/pol_1"),
        ("POST", "/policies/pol_1/health", "policy_not_found", "/policies"),
        ("POST", "/policies", "key_not_found", "/policies"),
        ("GET", "/tokens", "permission_denied", "/environments"),
        ("GET", "/nowhere", "not_found", "/environments"),
    ],
)
def test_error_pages_link_back_to_the_object_or_its_container(
    method: str, path: str, code: str, expected: str
) -> None:
    from keyshift.web.backlinks import back_link

    assert back_link(method, path, code).url == expected
