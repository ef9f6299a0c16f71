"""Helpers for the feature-storage tests: environments on the platform key (or SQL-restricted),
and snapshots of every table a feature operation could touch (to prove refusals changed nothing)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from keyshift.db.models import Environment, Tenant, VaultRecord
from keyshift.db.types import new_id
from keyshift.runtime import Runtime

FEATURES = ["search", "data-lake", "long-term-retention"]
SNAPSHOT_TABLES = (
    "data_records",
    "search_indexes",
    "search_postings",
    "lake_exports",
    "backups",
    "deks",
    "jobs",
    "environments",
)


def make_env(
    rt: Runtime,
    name: str = "contoso-prod",
    *,
    tenant: str = "contoso",
    byok: bool = False,
    features: list[str] | None = None,
) -> str:
    """A tenant (created if missing) and an environment on the platform key; returns the env id."""
    now = rt.clock.now()
    with rt.transaction() as s:
        t = s.scalars(select(Tenant).where(Tenant.name == tenant)).first()
        if t is None:
            t = Tenant(id=new_id("ten"), name=tenant, byok_feature=byok, sql_restriction=byok, created_at=now)
            s.add(t)
            s.flush()
        vault = s.scalars(select(VaultRecord).where(VaultRecord.name == rt.settings.platform_vault)).one()
        env = Environment(
            id=new_id("env"),
            tenant_id=t.id,
            name=name,
            region="eu",
            type="production",
            state="enabled",
            features=list(FEATURES if features is None else features),
            stores=(
                {"records": "sql", "audit": "sql", "files": "sql"}
                if byok
                else {"records": "sql", "audit": "document", "files": "file_storage"}
            ),
            enc_mode="platform",
            enc_managed_by="platform",
            kek_vault_id=vault.id,
            kek_key_name=rt.settings.platform_key,
            kek_identity=rt.settings.platform_identity,
            created_at=now,
        )
        s.add(env)
        s.flush()
        return env.id


def snapshot(rt: Runtime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with rt.engine.connect() as conn:
        for t in SNAPSHOT_TABLES:
            rows = conn.execute(text(f"select * from {t}")).all()
            out[t] = sorted(repr(tuple(r)) for r in rows)
    return out
