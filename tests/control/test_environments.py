"""Environments: create with region/type on the platform key, layouts, list, show (the docs/CONCEPTS.md
encryption page), managed flag, features and the SQL-restriction refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_support import audit_rows, snapshot

from keyshift.control import environments, tenants
from keyshift.db.models import Environment
from keyshift.errors import AlreadyExistsError, ConflictError, NotFoundError, UsageError
from keyshift.runtime import Runtime

SHOW_FIELDS = {
    "id",
    "name",
    "tenant",
    "region",
    "type",
    "managed",
    "state",
    "sql_restriction",
    "features",
    "stores",
    "encryption",
}


def test_new_environment_is_bound_to_the_platform_key(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "contoso")
    v = environments.create_environment(ctl, "contoso", "contoso-prod", region="us", env_type="production")
    assert set(v) >= SHOW_FIELDS
    assert (v["tenant"]["name"], v["region"], v["type"], v["managed"], v["state"]) == (
        "contoso",
        "us",
        "production",
        False,
        "enabled",
    )
    assert v["sql_restriction"] is False and v["features"] == []
    assert v["stores"] == {"records": "sql", "audit": "document", "files": "file_storage"}
    enc = v["encryption"]
    assert {"mode", "managed_by", "status", "policy", "key"} <= set(enc)
    assert (enc["mode"], enc["managed_by"], enc["status"], enc["policy"]) == (
        "platform",
        "platform",
        "encrypted",
        None,
    )
    assert enc["key"]["vault"]["name"] == ctl.settings.platform_vault
    assert enc["key"]["name"] == ctl.settings.platform_key
    assert enc["key"]["identity"] == ctl.settings.platform_identity


def test_defaults_region_from_settings_and_type_sandbox(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    v = environments.create_environment(ctl, "t", "e1")
    assert v["region"] == ctl.settings.default_region and v["type"] == "sandbox"


def test_byok_tenant_environment_gets_the_sql_only_layout(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "fab", byok=True)
    v = environments.create_environment(ctl, "fab", "fab-dev")
    assert v["stores"] == {"records": "sql", "audit": "sql", "files": "sql"}
    assert v["sql_restriction"] is True


def test_show_by_name_or_id(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    v = environments.create_environment(ctl, "t", "e1")
    assert environments.show_environment(ctl, v["id"]) == environments.show_environment(ctl, "e1")


def test_list_filters_by_tenant_and_with_policies(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t1")
    tenants.create_tenant(ctl, "t2")
    environments.create_environment(ctl, "t1", "a")
    environments.create_environment(ctl, "t2", "b")
    assert [e["name"] for e in environments.list_environments(ctl)] == ["a", "b"]
    assert [e["name"] for e in environments.list_environments(ctl, tenant="t2")] == ["b"]
    assert environments.list_environments(ctl, with_policies=True) == []


def test_customer_via_platform_renders_with_the_platform_name(ctl: Runtime) -> None:
    assert environments.render_managed_by(ctl, "customer_via_platform") == (
        f"CustomerVia{ctl.settings.platform_name}"
    )
    named = ctl.settings.model_copy(update={"platform_name": "Microsoft"})
    ctl.settings = named
    assert environments.render_managed_by(ctl, "customer_via_platform") == "CustomerViaMicrosoft"


def test_managed_enable_disable(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    environments.create_environment(ctl, "t", "e1")
    assert environments.set_managed(ctl, "e1", True)["managed"] is True
    assert environments.set_managed(ctl, "e1", False)["managed"] is False
    acts = [e.action for e in audit_rows(ctl) if e.action.startswith("environment.managed")]
    assert acts == ["environment.managed.enable", "environment.managed.disable"]


def test_feature_enable_records_feature_and_runs_hooks(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    environments.create_environment(ctl, "t", "e1")
    seen: list[tuple[str, str]] = []

    def hook(rt, session, env, feature):  # type: ignore[no-untyped-def]
        seen.append((env.name, feature))

    environments.FEATURE_ENABLED_HOOKS.append(hook)
    try:
        v = environments.enable_feature(ctl, "e1", "search")
        environments.enable_feature(ctl, "e1", "search")  # idempotent: hook not run again
    finally:
        environments.FEATURE_ENABLED_HOOKS.remove(hook)
    assert v["features"] == ["search"] and seen == [("e1", "search")]


def test_failing_feature_hook_rolls_the_enable_back(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    environments.create_environment(ctl, "t", "e1")

    def hook(rt, session, env, feature):  # type: ignore[no-untyped-def]
        raise ConflictError("storage could not be created", code="storage_failed")

    environments.FEATURE_ENABLED_HOOKS.append(hook)
    before = snapshot(ctl)
    try:
        with pytest.raises(ConflictError):
            environments.enable_feature(ctl, "e1", "data-lake")
    finally:
        environments.FEATURE_ENABLED_HOOKS.remove(hook)
    assert snapshot(ctl) == before


def test_sql_restriction_refuses_non_sql_features(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "fab", byok=True)
    environments.create_environment(ctl, "fab", "fab-dev")
    before = snapshot(ctl)
    for feature in environments.NON_SQL_FEATURES:
        with pytest.raises(ConflictError) as info:
            environments.enable_feature(ctl, "fab-dev", feature)
        assert info.value.code == "sql_restriction" and info.value.exit_code == 4
        assert snapshot(ctl) == before
        ev = audit_rows(ctl, "environment.feature.enable")[-1]
        assert ev.outcome == "error" and "sql_restriction" in (ev.reason or "")
        assert ev.details["feature"] == feature


def test_sql_restriction_still_allows_sql_features(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "fab", byok=True)
    environments.create_environment(ctl, "fab", "fab-dev")
    assert environments.enable_feature(ctl, "fab-dev", "audit")["features"] == ["audit"]


def test_sql_restriction_stays_after_flag_removal_but_not_on_cmk_environments(
    ctl: Runtime, tmp_path: Path
) -> None:
    from keyshift.control import byok

    tenants.create_tenant(ctl, "fab", byok=True)
    byok.generate(ctl, "fab", "k1", out=tmp_path / "k1.pfx", password="correct horse battery 1")
    byok.activate(ctl, "fab", "k1")
    environments.create_environment(ctl, "fab", "e-byok", byok=True)  # keeps the tenant BYOK
    environments.create_environment(ctl, "fab", "e-plain")
    environments.create_environment(ctl, "fab", "e-cmk")
    tenants.byok_flag_remove(ctl, "fab", ticket="T-1")
    for name in ("e-byok", "e-plain"):
        with pytest.raises(ConflictError):
            environments.enable_feature(ctl, name, "search")
    with ctl.transaction() as s:  # as the migration part leaves a migrated environment
        env = s.query(Environment).filter_by(name="e-cmk").one()
        env.enc_mode, env.enc_managed_by = "cmk", "customer_via_platform"
    assert environments.show_environment(ctl, "e-cmk")["sql_restriction"] is False
    assert environments.enable_feature(ctl, "e-cmk", "search")["features"] == ["search"]


BAD_INPUT = (
    (lambda rt: environments.create_environment(rt, "t", "e1"), AlreadyExistsError, "environment_exists"),
    (
        lambda rt: environments.create_environment(rt, "t2", "e1"),
        AlreadyExistsError,
        "environment_exists",
    ),
    (lambda rt: environments.create_environment(rt, "nobody", "e2"), NotFoundError, "tenant_not_found"),
    (
        lambda rt: environments.create_environment(rt, "t", "e2", region="mars"),
        UsageError,
        "invalid_region",
    ),
    (
        lambda rt: environments.create_environment(rt, "t", "e2", env_type="prod"),
        UsageError,
        "invalid_type",
    ),
    (lambda rt: environments.create_environment(rt, "t", "e 2"), UsageError, "invalid_name"),
    (lambda rt: environments.show_environment(rt, "nope"), NotFoundError, "environment_not_found"),
    (lambda rt: environments.set_managed(rt, "nope", True), NotFoundError, "environment_not_found"),
    (lambda rt: environments.enable_feature(rt, "e1", "teleport"), UsageError, "invalid_feature"),
    (
        lambda rt: environments.enable_feature(rt, "nope", "search"),
        NotFoundError,
        "environment_not_found",
    ),
    (lambda rt: environments.list_environments(rt, tenant="nobody"), NotFoundError, "tenant_not_found"),
    # Conflicting request: --byok for a tenant without the legacy BYOK feature.
    (lambda rt: environments.create_environment(rt, "t", "e2", byok=True), ConflictError, "byok_feature_off"),
)


def test_bad_input_is_refused_and_changes_nothing(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    tenants.create_tenant(ctl, "t2")
    environments.create_environment(ctl, "t", "e1")
    before = snapshot(ctl)
    for call, err, code in BAD_INPUT:
        with pytest.raises(err) as info:
            call(ctl)
        assert info.value.code == code
        assert snapshot(ctl) == before


def test_managed_disable_refused_while_linked(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    environments.create_environment(ctl, "t", "e1")
    environments.set_managed(ctl, "e1", True)
    with ctl.transaction() as s:  # a link, as the migration part would leave it (needs a policy row)
        from keyshift.db.models import Policy, Tenant

        t = s.query(Tenant).filter_by(name="t").one()
        vault_id = s.query(Environment).filter_by(name="e1").one().kek_vault_id
        s.add(
            Policy(
                id="pol_x",
                tenant_id=t.id,
                name="p",
                region="eu",
                vault_id=vault_id,
                key_name="k",
                identity="pol-x",
                created_at=ctl.clock.now(),
            )
        )
        s.flush()
        s.query(Environment).filter_by(name="e1").one().policy_id = "pol_x"
    before = snapshot(ctl)
    with pytest.raises(ConflictError) as info:
        environments.set_managed(ctl, "e1", False)
    assert info.value.code == "policy_linked"
    assert snapshot(ctl) == before
    assert [e["name"] for e in environments.list_environments(ctl, with_policies=True)] == ["e1"]


def test_disabled_or_deleted_environments_refuse_changes(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "t")
    environments.create_environment(ctl, "t", "off")
    environments.create_environment(ctl, "t", "gone")
    with ctl.transaction() as s:  # as revocation / deletion leave them
        s.query(Environment).filter_by(name="off").one().state = "disabled"
        s.query(Environment).filter_by(name="gone").one().state = "deleted"
    before = snapshot(ctl)
    for call, code in (
        (lambda: environments.enable_feature(ctl, "off", "search"), "environment_not_enabled"),
        (lambda: environments.enable_feature(ctl, "gone", "search"), "environment_deleted"),
        (lambda: environments.set_managed(ctl, "gone", True), "environment_deleted"),
    ):
        with pytest.raises(ConflictError) as info:
            call()
        assert info.value.code == code
        assert snapshot(ctl) == before
    assert [e["name"] for e in environments.list_environments(ctl)] == ["off"]
