"""Building blocks for migration tests: tenants, environments, a customer key + policy, data."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from keyshift.control import environments, tenants, vaults
from keyshift.db.models import Dek, DekWrap, Environment, Policy, Tenant
from keyshift.db.types import new_id
from keyshift.jobs import store
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime


def customer_key(
    rt: Runtime, vault: str = "contoso-kv", key: str = "cmk", size: int = 2048
) -> tuple[str, str]:
    from keyshift.db.models import VaultRecord

    with rt.transaction() as s:
        exists = s.scalars(select(VaultRecord.id).where(VaultRecord.name == vault)).first()
    if exists is None:
        vaults.create_local_vault(rt, vault, soft_delete_days=90, purge_protection=True)
    vaults.create_key(rt, vault, key, "RSA", size)
    return vault, key


def make_policy(
    rt: Runtime, tenant: str, name: str, vault: str, key: str, *, region: str | None = None
) -> str:
    """A healthy policy whose identity holds get/wrapKey/unwrapKey on the key.

    Uses the control plane's policy service when present, else inserts the row (same columns)."""
    try:
        from keyshift.control import policies  # type: ignore[attr-defined]
        from keyshift.control.health import check_policy  # type: ignore[import-not-found]
    except ImportError:
        policies = None
    region = region or rt.settings.default_region
    if policies is not None:
        view = policies.create_policy(rt, tenant, name, region=region, vault=vault, key=key)
        vaults.grant_key(rt, vault, key, view["identity"], "get,wrapKey,unwrapKey")
        check_policy(rt, view["id"])
        return str(view["id"])
    identity = f"pol-{secrets.token_hex(6)}"
    with rt.transaction() as s:
        t = s.scalars(select(Tenant).where((Tenant.name == tenant) | (Tenant.id == tenant))).one()
        from keyshift.control.common import get_vault_record

        v = get_vault_record(s, vault)
        p = Policy(
            id=new_id("pol"),
            tenant_id=t.id,
            name=name,
            region=region,
            vault_id=v.id,
            key_name=key,
            identity=identity,
            health="healthy",
            health_reasons=[],
            created_at=rt.clock.now(),
        )
        s.add(p)
        s.flush()
        pid = p.id
    vaults.grant_key(rt, vault, key, identity, "get,wrapKey,unwrapKey")
    return pid


def make_env(
    rt: Runtime, tenant: str, name: str, *, managed: bool = True, env_type: str = "production"
) -> str:
    view = environments.create_environment(rt, tenant, name, env_type=env_type)
    if managed:
        environments.set_managed(rt, name, True)
    return str(view["id"])


def make_tenant(rt: Runtime, name: str, *, byok: bool = False) -> str:
    return str(tenants.create_tenant(rt, name, byok=byok)["id"])


def run(rt: Runtime, job_id: str, **kw: Any) -> str:
    return Worker(rt, poll_seconds=0.01, **kw).run_job(job_id)


def job(rt: Runtime, job_id: str) -> dict[str, Any]:
    with rt.transaction() as s:
        return store.to_view(store.find_job(s, job_id))


def env_row(rt: Runtime, env: str) -> Environment:
    with rt.transaction() as s:
        row = s.scalars(select(Environment).where((Environment.name == env) | (Environment.id == env))).one()
        s.expunge(row)
        return row


def wraps(rt: Runtime, env_id: str) -> list[tuple[str, str, str, str]]:
    """(dek, state, vault_id, key_name) of every wrap of the environment's DEKs."""
    with rt.transaction() as s:
        rows = s.execute(
            select(DekWrap.dek_id, DekWrap.state, DekWrap.vault_id, DekWrap.key_name)
            .join(Dek, Dek.id == DekWrap.dek_id)
            .where(Dek.environment_id == env_id)
            .order_by(DekWrap.id)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


def records(rt: Runtime, env_id: str, table: str = "t") -> dict[str, Any]:
    from keyshift.stores.records import RecordStore

    return {r.id: r.value for r in RecordStore(rt, env_id).iter_all(table)}


def ids(n: int, prefix: str = "r") -> Iterator[str]:
    return (f"{prefix}{i:06d}" for i in range(n))


def byok_world(
    rt: Runtime, tmp: Any, tenant: str = "fabrikam", envs: tuple[str, ...] = ("fab-prod",)
) -> dict[str, Any]:
    """A BYOK tenant with an active key, BYOK environments (managed), the flag still ON."""
    from keyshift.control import byok

    make_tenant(rt, tenant, byok=True)
    byok.generate(rt, tenant, "k1", out=tmp / f"{tenant}.pfx", password="correct horse battery staple 1")
    byok.activate(rt, tenant, "k1")
    out: dict[str, Any] = {"tenant": tenant, "envs": {}}
    for name in envs:
        view = environments.create_environment(rt, tenant, name, env_type="production", byok=True)
        environments.set_managed(rt, name, True)
        out["envs"][name] = str(view["id"])
    return out


def fill(rt: Runtime, env_id: str, *, rows: int = 50, events: int = 20, files: int = 0) -> dict[str, Any]:
    """Write rows, audit events (and files when the file store exists); return what was written."""
    from keyshift.stores.audit import AuditLog
    from keyshift.stores.records import RecordStore

    data: dict[str, Any] = {"rows": {}, "events": {}, "files": {}}
    RecordStore(rt, env_id).put_many("t", [(f"r{i:04d}", {"n": i}) for i in range(rows)])
    data["rows"] = {f"r{i:04d}": {"n": i} for i in range(rows)}
    log = AuditLog(rt, env_id)
    for i in range(events):
        eid = log.append({"i": i, "who": "alice"})
        data["events"][eid] = {"i": i, "who": "alice"}
    if files:
        from keyshift.stores.files import FileStore  # type: ignore[import-not-found]

        fs = FileStore(rt, env_id)
        for i in range(files):
            body = f"file {i} ".encode() * (50 + i * 37)
            fs.put(f"docs/f{i}.bin", body)
            data["files"][f"docs/f{i}.bin"] = body
    return data


def read_all(rt: Runtime, env_id: str) -> dict[str, Any]:
    from keyshift.stores.audit import AuditLog

    out: dict[str, Any] = {"rows": records(rt, env_id), "events": {}, "files": {}}
    for e in AuditLog(rt, env_id).query(limit=10_000):
        assert e["id"] not in out["events"], "duplicate audit event"
        out["events"][e["id"]] = e["event"]
    try:
        from keyshift.stores.files import FileStore  # type: ignore[import-not-found]
    except ImportError:
        return out
    fs = FileStore(rt, env_id)
    for item in fs.list(""):
        path = item["path"] if isinstance(item, dict) else item
        out["files"][path] = fs.get(path)
    return out
