"""Tenants: create (plain and legacy BYOK with its BYOK vault), list, show, BYOK flag removal."""

from __future__ import annotations

from pathlib import Path

import pytest
from control_support import audit_rows, snapshot

from keyshift.control import tenants
from keyshift.errors import AlreadyExistsError, ConflictError, NotFoundError, UsageError
from keyshift.runtime import Runtime


def test_create_plain_tenant_has_no_byok(ctl: Runtime) -> None:
    v = tenants.create_tenant(ctl, "contoso")
    assert v["name"] == "contoso" and v["id"].startswith("ten_")
    assert v["byok_feature"] is False and v["sql_restriction"] is False
    assert v["byok_vault"] is None and v["final_byok_migration_at"] is None
    assert v["environments"] == 0 and v["byok_keys"] == []


def test_create_byok_tenant_creates_platform_owned_byok_vault(ctl: Runtime) -> None:
    v = tenants.create_tenant(ctl, "fabrikam", byok=True)
    assert v["byok_feature"] is True and v["sql_restriction"] is True
    assert v["byok_vault"]["name"] == "byok-fabrikam"
    assert v["byok_vault"]["state"] == "active" and v["byok_vault"]["delete_after"] is None
    from keyshift.db.models import VaultRecord

    with ctl.transaction() as s:
        vault = s.get(VaultRecord, v["byok_vault"]["id"])
        assert vault is not None
        assert (vault.kind, vault.owner, vault.tenant_id) == ("local", "platform", v["id"])
        assert vault.soft_delete_days == 90 and vault.purge_protection is True


def test_show_by_name_or_id_and_list(ctl: Runtime) -> None:
    a = tenants.create_tenant(ctl, "a-tenant")
    tenants.create_tenant(ctl, "b-tenant", byok=True)
    assert tenants.show_tenant(ctl, a["id"]) == tenants.show_tenant(ctl, "a-tenant")
    names = [t["name"] for t in tenants.list_tenants(ctl)]
    assert names == ["a-tenant", "b-tenant"]


def test_byok_flag_remove_records_ticket_and_keeps_sql_restriction(ctl: Runtime, tmp_path: Path) -> None:
    from keyshift.control import byok, environments

    tenants.create_tenant(ctl, "fab", byok=True)
    byok.generate(ctl, "fab", "k1", out=tmp_path / "k1.pfx", password="correct horse battery 1")
    byok.activate(ctl, "fab", "k1")
    environments.create_environment(ctl, "fab", "fab-env", byok=True)
    v = tenants.byok_flag_remove(ctl, "fab", ticket="OPS-1234")
    assert v["byok_feature"] is False
    assert v["sql_restriction"] is True  # lifted only when the last BYOK environment has left BYOK
    assert v["final_byok_migration_at"] is None
    assert v["byok_flag_ticket"] == "OPS-1234"
    assert v["byok_flag_removed_at"] == ctl.clock.now().isoformat().replace("+00:00", "Z")
    ev = audit_rows(ctl, "tenant.byok_flag.remove")[-1]
    assert ev.outcome == "ok" and ev.details["ticket"] == "OPS-1234" and ev.tenant_id == v["id"]


BAD_INPUT = (
    (lambda rt: tenants.create_tenant(rt, "dup"), AlreadyExistsError, "tenant_exists"),
    (lambda rt: tenants.create_tenant(rt, "bad name!"), UsageError, "invalid_name"),
    (lambda rt: tenants.create_tenant(rt, ""), UsageError, "invalid_name"),
    (lambda rt: tenants.create_tenant(rt, "x" * 101), UsageError, "invalid_name"),
    (lambda rt: tenants.create_tenant(rt, "ten_0123456789abcdef0123"), UsageError, "invalid_name"),
    (lambda rt: tenants.show_tenant(rt, "nobody"), NotFoundError, "tenant_not_found"),
    (lambda rt: tenants.byok_flag_remove(rt, "nobody", ticket="T-1"), NotFoundError, "tenant_not_found"),
    (lambda rt: tenants.byok_flag_remove(rt, "dup", ticket="T-1"), ConflictError, "byok_feature_off"),
    (lambda rt: tenants.byok_flag_remove(rt, "byokt", ticket="  "), UsageError, "ticket_required"),
)


def test_bad_input_is_refused_and_changes_nothing(ctl: Runtime) -> None:
    tenants.create_tenant(ctl, "dup")
    tenants.create_tenant(ctl, "byokt", byok=True)
    before = snapshot(ctl)
    for call, err, code in BAD_INPUT:
        with pytest.raises(err) as info:
            call(ctl)
        assert info.value.code == code
        assert snapshot(ctl) == before


def test_byok_vault_name_taken_is_refused_without_a_half_created_tenant(ctl: Runtime) -> None:
    from keyshift.db.models import VaultRecord
    from keyshift.db.types import new_id

    with ctl.transaction() as s:
        s.add(
            VaultRecord(
                id=new_id("vlt"), name="byok-taken", kind="local", config={}, created_at=ctl.clock.now()
            )
        )
    before = snapshot(ctl)
    with pytest.raises(AlreadyExistsError) as info:
        tenants.create_tenant(ctl, "taken", byok=True)
    assert info.value.code == "vault_exists"
    assert snapshot(ctl) == before
    fail = audit_rows(ctl, "tenant.create")[-1]
    assert fail.outcome == "error" and "vault_exists" in (fail.reason or "")


def test_every_tenant_change_is_audited(ctl: Runtime) -> None:
    v = tenants.create_tenant(ctl, "audited", byok=True)
    tenants.byok_flag_remove(ctl, "audited", ticket="T-9")
    acts = [(e.action, e.outcome, e.tenant_id, e.principal) for e in audit_rows(ctl)]
    assert ("tenant.create", "ok", v["id"], "operator:test") in acts
    assert ("tenant.byok_flag.remove", "ok", v["id"], "operator:test") in acts


@pytest.mark.parametrize("name", ["contoso\n", "contoso\r\n", "\ncontoso"])
def test_a_name_with_a_line_break_is_refused_and_nothing_is_created(ctl: Runtime, name: str) -> None:
    before = snapshot(ctl)
    with pytest.raises(UsageError) as exc:
        tenants.create_tenant(ctl, name)
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
    assert snapshot(ctl) == before
