"""The evidence of a disable (which vault, which check, what it answered) in the REST API's
environment route and on the admin center's environment page."""

from __future__ import annotations

import html
import re

from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import tokens, vaults
from keyshift.control.monitor import monitor_once

from .helpers import KEY, VAULT, cmk_world


def test_api_and_admin_center_show_the_evidence(sqlite_rt) -> None:  # type: ignore[no-untyped-def]
    rt = sqlite_rt
    world = cmk_world(rt, rows=1)
    vaults.set_key_enabled(rt, VAULT, KEY, False, force=True)
    out = monitor_once(rt)[world.policy]
    assert out["environments_disabled"] == [world.envs["contoso-prod"]]
    token = tokens.create_token(rt, "tenant_admin", tenant="contoso")["token"]
    with TestClient(create_app(rt), raise_server_exceptions=False) as client:
        r = client.get("/api/v1/environments/contoso-prod", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        ev = r.json()["state_evidence"]
        assert (
            ev["vault"]["name"] == VAULT
            and ev["key"] == KEY
            and ev["source"] == "monitor"
            and ev["outcome"] == "refused"
        )
        assert "fresh connection" in ev["check"] and ev["answer"].startswith("key_disabled")

        form = client.get("/login").text
        csrf = re.search(r'name="login_csrf" value="([^"]+)"', form)
        assert csrf
        client.post("/login", data={"token": token, "login_csrf": csrf.group(1)}, follow_redirects=False)
        page = client.get(f"/environments/{world.envs['contoso-prod']}")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert 'id="state-evidence"' in text and ev["check"] in text and ev["answer"] in text
