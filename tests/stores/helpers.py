"""Test helpers for the data plane: tenants and environments bound to the platform key, state
snapshots of the data tables (to prove bad input changed nothing), and a vault-call counter."""

from __future__ import annotations

import hashlib
import io
import secrets
from typing import Any

from sqlalchemy import select, text, update

from keyshift.db.models import Environment, Tenant, VaultRecord
from keyshift.db.types import new_id
from keyshift.runtime import Runtime

SQL_LAYOUT = {"records": "sql", "audit": "sql", "files": "sql"}
DEFAULT_LAYOUT = {"records": "sql", "audit": "document", "files": "file_storage"}


def make_env(
    rt: Runtime,
    name: str = "contoso-prod",
    *,
    tenant: str = "contoso",
    byok: bool = False,
    stores: dict[str, str] | None = None,
    features: list[str] | None = None,
) -> str:
    """A new tenant and environment on the platform key; returns the env id.

    Names get a random suffix (`contoso-prod-1a2b3c`) so tests sharing a home never collide.
    """
    now = rt.clock.now()
    suffix = secrets.token_hex(3)
    name, tenant = f"{name}-{suffix}", f"{tenant}-{suffix}"
    with rt.transaction() as s:
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
            features=list(features or []),
            stores=dict(stores or (SQL_LAYOUT if byok else DEFAULT_LAYOUT)),
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


def set_env(rt: Runtime, env_id: str, **values: Any) -> None:
    with rt.transaction() as s:
        s.execute(
            update(Environment)
            .where(Environment.id == env_id)
            .values(**values, version=Environment.version + 1)
        )


def env_name(rt: Runtime, env_id: str) -> str:
    with rt.transaction() as s:
        return str(s.scalars(select(Environment.name).where(Environment.id == env_id)).one())


def snapshot(rt: Runtime, *tables: str, env_id: str | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the given tables (of one environment if given), sorted: compare before/after."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with rt.engine.connect() as conn:
        for t in tables:
            where = " WHERE environment_id = :e" if env_id else ""
            rows = conn.execute(text(f"SELECT * FROM {t}{where}"), {"e": env_id}).all()
            out[t] = sorted((tuple(r) for r in rows), key=repr)
    return out


class CountingVault:
    """Wraps a real vault adapter and counts wrap/unwrap calls (the adapter does the work)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.kind = inner.kind
        self.calls: dict[str, int] = {"wrap": 0, "unwrap": 0}

    def wrap(self, *a: Any, **kw: Any) -> Any:
        self.calls["wrap"] += 1
        return self.inner.wrap(*a, **kw)

    def unwrap(self, *a: Any, **kw: Any) -> Any:
        self.calls["unwrap"] += 1
        return self.inner.unwrap(*a, **kw)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def count_vault_calls(rt: Runtime, monkeypatch: Any) -> dict[str, CountingVault]:
    """Route every rt.vault(...) through a CountingVault; returns the registry of counters."""
    seen: dict[str, CountingVault] = {}
    original = rt.vault

    def vault(name_or_id: str) -> Any:
        inner = original(name_or_id)
        key = inner.name
        if key not in seen:
            seen[key] = CountingVault(inner)
        return seen[key]

    monkeypatch.setattr(rt, "vault", vault)
    return seen


class Pattern(io.RawIOBase):
    """`size` deterministic pseudo-random bytes, generated on the fly (never all in memory)."""

    def __init__(self, size: int, seed: bytes = b"s") -> None:
        super().__init__()
        self.left = size
        self.block = hashlib.shake_256(seed).digest(1 << 16)
        self.pos = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        n = min(len(view), self.left, len(self.block) - self.pos)
        if n <= 0:
            return 0
        chunk = self.block[self.pos : self.pos + n]
        view[:n] = chunk
        self.digest.update(chunk)
        self.pos = (self.pos + n) % len(self.block)
        self.left -= n
        return n
