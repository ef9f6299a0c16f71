"""Building blocks for revocation tests: a tenant with CMK-linked environments holding data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from keyshift.control import environments, tenants, vaults
from keyshift.control.health import check_policy
from keyshift.control.policies import create_policy
from keyshift.db.models import AdminAuditEvent, Environment
from keyshift.runtime import Runtime

VAULT = "contoso-kv"
KEY = "cmk"


@dataclass
class World:
    tenant: str
    policy: str
    identity: str
    envs: dict[str, str] = field(default_factory=dict)  # name -> id


def cmk_world(
    rt: Runtime,
    envs: tuple[tuple[str, str], ...] = (("contoso-prod", "production"),),
    *,
    rows: int = 20,
    soft_delete_days: int = 90,
    key_expires: Any = None,
) -> World:
    """Tenant `contoso`, local vault + RSA key, a healthy policy, environments linked to it (real
    link jobs run by a worker), each holding `rows` records in table `t`."""
    from keyshift.jobs.runner import Worker
    from keyshift.migrate.link import start_link

    tenants.create_tenant(rt, "contoso")
    vaults.create_local_vault(rt, VAULT, soft_delete_days=soft_delete_days, purge_protection=True)
    vaults.create_key(rt, VAULT, KEY, "RSA", 2048, expires=key_expires)
    pol = create_policy(rt, "contoso", "pol", region=rt.settings.default_region, vault=VAULT, key=KEY)
    vaults.grant_key(rt, VAULT, KEY, pol["identity"], "get,wrapKey,unwrapKey")
    assert check_policy(rt, pol["id"]).status == "healthy"
    world = World("contoso", pol["id"], pol["identity"])
    for name, env_type in envs:
        view = environments.create_environment(rt, "contoso", name, env_type=env_type)
        environments.set_managed(rt, name, True)
        put_rows(rt, view["id"], rows)
        job = start_link(rt, pol["id"], name)
        assert Worker(rt, poll_seconds=0.01).run_job(job["id"]) == "succeeded"
        world.envs[name] = view["id"]
    return world


def records_store(rt: Runtime, env_id: str) -> Any:
    try:
        from keyshift.stores.service import EnvironmentData  # type: ignore[import-not-found]
    except ImportError:
        from keyshift.stores.records import RecordStore

        return RecordStore(rt, env_id)
    return EnvironmentData(rt, env_id).records


def put_rows(rt: Runtime, env_id: str, n: int, prefix: str = "r") -> None:
    if n:
        records_store(rt, env_id).put_many(
            "t", [(f"{prefix}{i:05d}", {"n": i, "p": prefix}) for i in range(n)]
        )


def read_all(rt: Runtime, env_id: str, table: str = "t") -> dict[str, Any]:
    return {r.id: r.value for r in records_store(rt, env_id).iter_all(table)}


def env_row(rt: Runtime, ref: str) -> Environment:
    with rt.transaction() as s:
        row = s.scalars(select(Environment).where((Environment.id == ref) | (Environment.name == ref))).one()
        s.expunge(row)
        return row


def audit_actions(rt: Runtime, target_id: str | None = None) -> list[tuple[str, str, str | None]]:
    with rt.transaction() as s:
        stmt = select(AdminAuditEvent.action, AdminAuditEvent.outcome, AdminAuditEvent.reason).order_by(
            AdminAuditEvent.id
        )
        if target_id is not None:
            stmt = stmt.where(AdminAuditEvent.target_id == target_id)
        return [tuple(r) for r in s.execute(stmt)]  # type: ignore[misc]


# -- the kinds of revocation, each with its undo ------------------------------------------------


def current_version(rt: Runtime) -> str:
    from keyshift.vaults.base import KeyRef

    return rt.vault(VAULT).describe(KeyRef(VAULT, KEY)).current_version


def faulty(rt: Runtime) -> Any:
    """Put a FaultyVault (a FAKE wrapper around the real local vault) in front of the vault, for
    this runtime only; returns it (call go_down()/come_back())."""
    from keyshift.vaults.faults import FaultyVault

    with rt.transaction() as s:
        from keyshift.control.common import get_vault_record

        vid = get_vault_record(s, VAULT).id
    fv = FaultyVault(rt.vault(vid))
    rt._vaults[vid] = fv  # type: ignore[assignment]
    rt._vaults[VAULT] = fv  # type: ignore[assignment]
    return fv


def revoke(rt: Runtime, kind: str, world: World, clock: Any = None) -> Any:
    """Make the policy's key unusable in one of the documented ways; returns the undo callable."""
    if kind == "grant_removed":
        vaults.revoke_key_grant(rt, VAULT, KEY, world.identity, force=True)
        return lambda: vaults.grant_key(rt, VAULT, KEY, world.identity, "get,wrapKey,unwrapKey")
    if kind == "key_disabled":
        vaults.set_key_enabled(rt, VAULT, KEY, False, force=True)
        return lambda: vaults.set_key_enabled(rt, VAULT, KEY, True)
    if kind == "version_disabled":
        v = current_version(rt)
        vaults.set_key_enabled(rt, VAULT, KEY, False, version=v, force=True)
        return lambda: vaults.set_key_enabled(rt, VAULT, KEY, True, version=v)
    if kind == "key_deleted":
        vaults.delete_key(rt, VAULT, KEY, force=True)
        return lambda: vaults.recover_key(rt, VAULT, KEY)
    if kind == "key_expired":
        before = clock.now()
        clock.advance(days=61)  # the key expires 60 days after the world was made
        return lambda: clock.set(before)
    if kind == "vault_unreachable":
        fv = faulty(rt)
        fv.go_down()
        return fv.come_back
    raise AssertionError(kind)


KINDS = (
    "grant_removed",
    "key_disabled",
    "version_disabled",
    "key_deleted",
    "key_expired",
    "vault_unreachable",
)


class Cli:
    """Runs `keyshift --home H [--database-url U] --json ...` in-process; KEYSHIFT_NOW follows `clock`."""

    def __init__(self, home: Any, db_url: str | None, clock: Any = None) -> None:
        from typer.testing import CliRunner

        self.home, self.db_url, self.clock = home, db_url, clock
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0, printed: bool = False) -> Any:
        """`printed`: the command prints its result even on a non-zero exit (e.g. `policy health`, 4 when
        not healthy): return stdout instead of the error."""
        import json

        from keyshift.cli.main import app

        base = ["--home", str(self.home), "--json"] + (["--database-url", self.db_url] if self.db_url else [])
        now = self.clock.now().isoformat() if self.clock is not None else ""
        res = self.runner.invoke(app, [*base, *args], env={"KEYSHIFT_NOW": now})
        assert res.exit_code == code, (args, res.exit_code, res.stdout, res.stderr)
        if code == 0 or printed:
            return json.loads(res.stdout)
        assert res.stdout == ""
        err = json.loads(res.stderr)
        assert set(err) == {"error"} and set(err["error"]) == {"code", "message"}
        return err["error"]


def snapshot(rt: Runtime) -> dict[str, Any]:
    """Environment rows (state, reason, deletion), DEK/wrap states, data row counts: for before/after."""
    from sqlalchemy import func

    from keyshift.db.models import ByokKey, DataRecord, Dek, DekWrap, Tenant

    with rt.transaction() as s:
        return {
            "envs": sorted(
                tuple(r)
                for r in s.execute(
                    select(
                        Environment.id,
                        Environment.state,
                        Environment.state_reason,
                        Environment.delete_after,
                        Environment.kek_key_name,
                        Environment.version,
                    )
                )
            ),
            "deks": sorted(tuple(r) for r in s.execute(select(Dek.id, Dek.state))),
            "wraps": sorted(tuple(r) for r in s.execute(select(DekWrap.id, DekWrap.state, DekWrap.key_name))),
            "records": s.scalar(select(func.count()).select_from(DataRecord)),
            "tenants": sorted(
                tuple(r) for r in s.execute(select(Tenant.id, Tenant.locked_at, Tenant.version))
            ),
            "byok_keys": sorted(tuple(r) for r in s.execute(select(ByokKey.id, ByokKey.state))),
        }
