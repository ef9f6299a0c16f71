"""The feature storages through real key-change jobs: link (platform -> CMK), re-encrypting link,
swap to another policy; storage of a feature enabled after linking is created under the CMK."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import keyshift.features  # noqa: F401
from keyshift.control import environments
from keyshift.db.models import Dek, DekWrap, Environment, VaultRecord
from keyshift.features import backups, lake, restore, search, search_jobs
from keyshift.jobs.runner import Worker
from keyshift.migrate.link import start_link, start_swap
from keyshift.runtime import Runtime
from keyshift.stores.records import RecordStore

pytest.importorskip("keyshift.control.policies")
from migrate.helpers import customer_key, make_env, make_policy, make_tenant


def _run(rt: Runtime, job_id: str) -> str:
    return Worker(rt, poll_seconds=0.01).run_job(job_id)


def _world(rt: Runtime, features: tuple[str, ...] = ("search", "data-lake", "long-term-retention")) -> str:
    make_tenant(rt, "contoso")
    env = make_env(rt, "contoso", "prod")
    for f in features:
        environments.enable_feature(rt, "prod", f)
    RecordStore(rt, env).put_many(
        "accounts", [(f"a{i}", {"name": f"Fabrikam {i}", "city": "Paris"}) for i in range(20)]
    )
    return env


def _index(rt: Runtime) -> None:
    view = search_jobs.set_fields(rt, "prod", "accounts", ["name", "city"])
    assert _run(rt, view["job"]) == "succeeded"


def _store_wraps(rt: Runtime, env: str) -> dict[str, set[str]]:
    """store -> names of the keys holding the current wraps of its DEKs."""
    with rt.transaction() as s:
        rows = s.execute(
            select(Dek.store, DekWrap.key_name)
            .join(DekWrap, DekWrap.dek_id == Dek.id)
            .where(Dek.environment_id == env, DekWrap.state == "current")
        ).all()
    out: dict[str, set[str]] = {}
    for store, key in rows:
        out.setdefault(store, set()).add(key)
    return out


def _hits(rt: Runtime, q: str = "paris") -> int:
    return len(search.search(rt, "prod", "accounts", q, limit=100)["results"])


def test_link_rewraps_every_feature_storage_and_they_keep_working(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    env = _world(rt)
    _index(rt)
    exported = lake.export_table(rt, "prod", "accounts")
    b = backups.create_backup(rt, "prod")
    vault, key = customer_key(rt)
    policy = make_policy(rt, "contoso", "pol", vault, key)
    assert _run(rt, start_link(rt, policy, "prod")["id"]) == "succeeded"
    wraps = _store_wraps(rt, env)
    for store in ("records", "search", "lake", "backup"):
        assert wraps[store] == {key}, store
    assert _hits(rt) == 20
    assert lake.read_export(rt, "prod", exported["path"])["rows"] == 20
    RecordStore(rt, env).delete("accounts", "a3")
    restore.restore_backup(rt, "prod", b["id"])  # taken before the migration, still restorable
    assert _hits(rt) == 20
    assert search_jobs.rekey_due(rt)["rebuild_jobs"] == []  # a rewrap keeps the search key


def test_feature_enabled_after_linking_is_created_under_the_cmk(sqlite_rt: Runtime) -> None:
    rt = sqlite_rt
    env = _world(rt, features=())
    vault, key = customer_key(rt)
    policy = make_policy(rt, "contoso", "pol", vault, key)
    assert _run(rt, start_link(rt, policy, "prod")["id"]) == "succeeded"
    assert "search" not in _store_wraps(rt, env)
    environments.enable_feature(rt, "prod", "search")
    environments.enable_feature(rt, "prod", "data-lake")
    wraps = _store_wraps(rt, env)
    assert wraps["search"] == {key} and wraps["lake"] == {key}
    with rt.transaction() as s:
        platform = s.scalars(
            select(VaultRecord.id).where(VaultRecord.name == rt.settings.platform_vault)
        ).one()
        assert s.get(Environment, env).kek_vault_id != platform  # type: ignore[union-attr]


@pytest.mark.parametrize("change", ["swap", "reencrypt"])
def test_swap_or_reencryption_replaces_the_search_key(sqlite_rt: Runtime, change: str) -> None:
    rt = sqlite_rt
    env = _world(rt)
    vault, key = customer_key(rt)
    p1 = make_policy(rt, "contoso", "pol1", vault, key)
    if change == "swap":
        assert _run(rt, start_link(rt, p1, "prod")["id"]) == "succeeded"
        _index(rt)
        customer_key(rt, key="cmk2")
        p2 = make_policy(rt, "contoso", "pol2", vault, "cmk2")
        rt.clock.advance(minutes=1)  # type: ignore[attr-defined]
        assert _run(rt, start_swap(rt, p2, "prod")["id"]) == "succeeded"
    else:
        _index(rt)
        rt.clock.advance(minutes=1)  # type: ignore[attr-defined]
        assert _run(rt, start_link(rt, p1, "prod", reencrypt=True)["id"]) == "succeeded"
    with rt.transaction() as s:
        old = s.scalars(select(Dek.id).where(Dek.environment_id == env, Dek.store == "search")).one()
    due = search_jobs.rekey_due(rt)
    assert len(due["rebuild_jobs"]) == 1, due
    assert _hits(rt) == 20  # the old generation answers while the new one is built
    assert _run(rt, due["rebuild_jobs"][0]) == "succeeded"
    assert _hits(rt) == 20
    with rt.transaction() as s:
        deks = {
            d.id: d.state
            for d in s.scalars(select(Dek).where(Dek.environment_id == env, Dek.store == "search"))
        }
    assert deks[old] == "retired" and sorted(deks.values()) == ["active", "retired"]
    assert search_jobs.rekey_due(rt)["rebuild_jobs"] == []
