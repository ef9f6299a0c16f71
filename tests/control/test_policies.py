"""Enterprise policies: create (identity), list, show, update/delete refused while linked; and
`policy health` against the real local vault: every unhealthy reason, warnings, undetermined, the
real wrap/unwrap round trip as the policy identity."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from control_support import audit_rows, snapshot

from keyshift.clock import FixedClock
from keyshift.control import environments, health, policies, tenants
from keyshift.control import vaults as vault_service
from keyshift.db.models import Environment
from keyshift.errors import AlreadyExistsError, ConflictError, NotFoundError, UsageError
from keyshift.runtime import Runtime
from keyshift.vaults.base import ALL_PERMISSIONS, VaultInfo, VaultUnavailableError


def _vault_id(rt: Runtime, name: str = "cust") -> str:
    return str(vault_service.show_vault(rt, name)["id"])


def _setup(
    rt: Runtime,
    *,
    purge: bool = True,
    grant: bool = True,
    key_type: str = "RSA",
    size: int = 2048,
    expires: Any = None,
) -> dict[str, Any]:
    tenants.create_tenant(rt, "contoso")
    vault_service.create_local_vault(rt, "cust", soft_delete_days=90, purge_protection=purge)
    vault_service.create_key(rt, "cust", "cmk", key_type, size, expires=expires)
    p = policies.create_policy(rt, "contoso", "pol", region="eu", vault="cust", key="cmk")
    if grant:
        vault_service.grant_key(rt, "cust", "cmk", p["identity"], ALL_PERMISSIONS)
    return p


def test_create_shows_identity_and_is_undetermined_until_checked(ctl: Runtime) -> None:
    p = _setup(ctl)
    assert p["identity"].startswith("pol-") and p["id"].startswith("pol_")
    assert (p["health"], p["kind"], p["vault"]["name"], p["key"], p["region"]) == (
        "undetermined",
        "encryption",
        "cust",
        "cmk",
        "eu",
    )
    assert policies.show_policy(ctl, "pol") == policies.show_policy(ctl, p["id"])
    assert [x["name"] for x in policies.list_policies(ctl, tenant="contoso")] == ["pol"]
    ev = audit_rows(ctl, "policy.create")[-1]
    assert ev.outcome == "ok" and ev.details["identity"] == p["identity"]


def test_policy_bad_input_changes_nothing(ctl: Runtime) -> None:
    _setup(ctl)
    tenants.create_tenant(ctl, "other")
    cases = [
        (
            lambda: policies.create_policy(ctl, "contoso", "pol", region="eu", vault="cust", key="cmk"),
            AlreadyExistsError,
            "policy_exists",
        ),
        (
            lambda: policies.create_policy(ctl, "ghost", "p2", region="eu", vault="cust", key="cmk"),
            NotFoundError,
            "tenant_not_found",
        ),
        (
            lambda: policies.create_policy(ctl, "contoso", "p2", region="eu", vault="nope", key="cmk"),
            NotFoundError,
            "vault_not_found",
        ),
        (
            lambda: policies.create_policy(ctl, "contoso", "p2", region="xx", vault="cust", key="cmk"),
            UsageError,
            "invalid_region",
        ),
        (
            lambda: policies.create_policy(ctl, "contoso", "p 2", region="eu", vault="cust", key="cmk"),
            UsageError,
            "invalid_name",
        ),
        (
            lambda: policies.create_policy(ctl, "contoso", "p2", region="eu", vault="cust", key=""),
            UsageError,
            "invalid_key",
        ),
        (
            lambda: policies.create_policy(ctl, "contoso", "p2", region="eu", vault="platform", key="k"),
            ConflictError,
            "platform_vault",
        ),
        (lambda: policies.show_policy(ctl, "ghost"), NotFoundError, "policy_not_found"),
        (lambda: policies.update_policy(ctl, "ghost", key="k"), NotFoundError, "policy_not_found"),
        (lambda: policies.delete_policy(ctl, "ghost"), NotFoundError, "policy_not_found"),
        (lambda: policies.list_policies(ctl, tenant="ghost"), NotFoundError, "tenant_not_found"),
        (lambda: health.policy_health(ctl, "ghost"), NotFoundError, "policy_not_found"),
    ]
    before = snapshot(ctl)
    for call, err, code in cases:
        with pytest.raises(err) as info:
            call()
        assert info.value.code == code
        assert snapshot(ctl) == before


def test_update_and_delete_refused_while_linked_allowed_after(ctl: Runtime) -> None:
    p = _setup(ctl)
    environments.create_environment(ctl, "contoso", "e1")
    with ctl.transaction() as s:  # linked, as the link job leaves it
        s.query(Environment).filter_by(name="e1").one().policy_id = p["id"]
    before = snapshot(ctl)
    for call in (
        lambda: policies.update_policy(ctl, "pol", key="other"),
        lambda: policies.delete_policy(ctl, "pol"),
    ):
        with pytest.raises(ConflictError) as info:
            call()
        assert info.value.code == "policy_in_use" and "e1" in info.value.message
        assert snapshot(ctl) == before
    assert [e["name"] for e in policies.show_policy(ctl, "pol")["environments"]] == ["e1"]
    with ctl.transaction() as s:
        s.query(Environment).filter_by(name="e1").one().policy_id = None
    u = policies.update_policy(ctl, "pol", key="other", key_version="3")
    assert (u["key"], u["key_version"], u["health"]) == ("other", "3", "undetermined")
    policies.delete_policy(ctl, "pol")
    assert policies.list_policies(ctl) == []
    with pytest.raises(NotFoundError):
        policies.show_policy(ctl, "pol")
    # The name is free again.
    policies.create_policy(ctl, "contoso", "pol", region="eu", vault="cust", key="cmk")
    acts = [(e.action, e.outcome) for e in audit_rows(ctl) if e.action in ("policy.update", "policy.delete")]
    assert acts == [
        ("policy.update", "error"),
        ("policy.delete", "error"),
        ("policy.update", "ok"),
        ("policy.delete", "ok"),
    ]


def test_health_healthy_after_a_real_round_trip(ctl: Runtime) -> None:
    _setup(ctl)
    vault = ctl.vault(_vault_id(ctl))  # the instance health uses (runtimes cache adapters by id)
    calls_before = vault.calls.copy()  # type: ignore[attr-defined]
    r = health.policy_health(ctl, "pol")
    assert (r["health"], r["reasons"], r["observed_key_version"]) == ("healthy", [], "1")
    calls = vault.calls  # type: ignore[attr-defined]
    assert calls["wrap"] == calls_before["wrap"] + 1 and calls["unwrap"] == calls_before["unwrap"] + 1
    shown = policies.show_policy(ctl, "pol")
    assert shown["health"] == "healthy" and shown["health_checked_at"] == ctl.clock.now().isoformat().replace(
        "+00:00", "Z"
    )
    assert audit_rows(ctl, "policy.health")[-1].details["health"] == "healthy"


def test_health_reports_each_problem(ctl: Runtime, clock: FixedClock) -> None:
    p = _setup(ctl, grant=False)
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("lacks get, wrapKey, unwrapKey" in x for x in r["reasons"])
    vault_service.grant_key(ctl, "cust", "cmk", p["identity"], "get,wrapKey")
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("lacks unwrapKey" in x for x in r["reasons"])
    vault_service.grant_key(ctl, "cust", "cmk", p["identity"], ALL_PERMISSIONS)
    assert health.policy_health(ctl, "pol")["health"] == "healthy"
    vault_service.set_key_enabled(ctl, "cust", "cmk", False)
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("disabled" in x for x in r["reasons"])
    vault_service.set_key_enabled(ctl, "cust", "cmk", True)
    vault_service.delete_key(ctl, "cust", "cmk")
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("deleted" in x for x in r["reasons"])
    policies.update_policy(ctl, "pol", key="missing")
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("not found" in x for x in r["reasons"])
    assert policies.show_policy(ctl, "pol")["health_reasons"] == r["reasons"]


def test_health_vault_without_purge_protection_is_unhealthy(ctl: Runtime) -> None:
    _setup(ctl, purge=False)
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("purge protection" in x for x in r["reasons"])


def test_health_aes_key_only_on_symmetric_only_vaults(ctl: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    _setup(ctl, key_type="AES", size=256)
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("natively" in x for x in r["reasons"])
    # FAKE: the local vault reporting itself symmetric-only (as an AES-only provider would).
    real = ctl.vault(_vault_id(ctl))
    real_info = real.info
    monkeypatch.setattr(real, "info", lambda: VaultInfo(**{**real_info().__dict__, "symmetric_only": True}))
    assert health.policy_health(ctl, "pol")["health"] == "healthy"


def test_health_expiry_warning_then_expired(ctl: Runtime, clock: FixedClock) -> None:
    _setup(ctl, expires=clock.now() + timedelta(days=10))
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "warning" and any("within 30 days" in x for x in r["reasons"])
    clock.advance(days=11)
    r = health.policy_health(ctl, "pol")
    assert r["health"] == "unhealthy" and any("expired" in x for x in r["reasons"])


def test_health_picks_up_rotation_and_warns_on_pinned_old_version(ctl: Runtime) -> None:
    _setup(ctl)
    health.policy_health(ctl, "pol")
    vault_service.rotate_key(ctl, "cust", "cmk")
    r = health.check_policy(ctl, "pol")
    assert (r.status, r.observed_key_version, r.current_key_version) == ("healthy", "2", "2")
    policies.update_policy(ctl, "pol", key="cmk", key_version="1")
    r = health.check_policy(ctl, "pol")
    assert r.status == "warning" and r.observed_key_version == "1"


class UnreachableVaultFake:
    """FAKE vault adapter: every call fails as an unreachable vault would (a local vault cannot)."""

    name = "cust"
    kind = "fake"

    def __getattr__(self, item: str) -> Any:
        def fail(*a: Any, **k: Any) -> Any:
            raise VaultUnavailableError("connection refused")

        return fail


def test_health_unreachable_vault_undetermined_then_grace_then_unhealthy(
    ctl: Runtime, clock: FixedClock
) -> None:
    _setup(ctl)
    vault_id = _vault_id(ctl)
    real = ctl.vault(vault_id)
    ctl._vaults[vault_id] = UnreachableVaultFake()  # type: ignore[assignment]
    r = health.check_policy(ctl, "pol")
    assert r.status == "undetermined" and not r.vault_reachable
    ctl._vaults[vault_id] = real
    assert health.check_policy(ctl, "pol").status == "healthy"
    ctl._vaults[vault_id] = UnreachableVaultFake()  # type: ignore[assignment]
    assert health.check_policy(ctl, "pol").status == "warning"
    clock.advance(seconds=ctl.settings.vault_grace_seconds + 1)
    r = health.check_policy(ctl, "pol")
    assert r.status == "unhealthy" and "unreachable" in r.reasons[0]
    ctl._vaults[vault_id] = real
    assert health.check_policy(ctl, "pol").status == "healthy"
    assert policies.show_policy(ctl, "pol")["unhealthy_since"] is None
    # Only changes were audited (check_policy without audit=True is the worker's periodic check;
    # undetermined -> undetermined was no change).
    seq = [e.details["health"] for e in audit_rows(ctl, "policy.health")]
    assert seq == ["healthy", "warning", "unhealthy", "healthy"]
