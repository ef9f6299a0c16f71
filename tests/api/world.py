"""A two-tenant world for authorization tests: alpha and beta, each with an environment, a customer
vault with a key, and (when the services exist) a policy and a job; tokens for every role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keyshift.control import environments, tenants, tokens, vaults
from keyshift.runtime import Runtime


@dataclass
class Side:
    tenant: dict[str, Any]
    env: dict[str, Any]
    env2: dict[str, Any]
    vault: dict[str, Any]
    key: str
    policy: dict[str, Any] | None = None
    job: str | None = None
    backup: str | None = None
    export: str | None = None  # a lake export's path in the probed environment

    def refs(self) -> dict[str, str]:
        out = {
            "tenant": self.tenant["id"],
            "env": self.env["id"],
            "environment": self.env["id"],
            "source": self.env2["id"],  # an environment named in a body next to `env` (env copy)
            "vault": self.vault["id"],
            "key": self.key,
        }
        if self.policy is not None:
            out["policy"] = self.policy["id"]
        if self.job is not None:
            out["job"] = self.job
        if self.backup is not None:
            out["backup"] = self.backup
        if self.export is not None:
            out["export"] = self.export
        return out

    def identifiers(self) -> set[str]:
        """Strings that must never appear in a response to the other tenant."""
        out = {self.tenant["id"], self.tenant["name"], self.env["id"], self.env["name"]}
        out |= {self.env2["id"], self.env2["name"], self.vault["id"], self.vault["name"]}
        if self.policy is not None:
            out |= {self.policy["id"], self.policy["name"]}
        if self.job is not None:
            out.add(self.job)
        if self.backup is not None:
            out.add(self.backup)
        return out


@dataclass
class World:
    alpha: Side
    beta: Side
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)


def _policies() -> Any:
    try:
        from keyshift.control import policies
    except ImportError:
        return None
    return policies


def _side(rt: Runtime, name: str) -> Side:
    t = tenants.create_tenant(rt, name)
    env = environments.create_environment(rt, t["id"], f"{name}-prod", env_type="production")
    env2 = environments.create_environment(rt, t["id"], f"{name}-dev", env_type="sandbox")
    vault = vaults.create_local_vault(
        rt, f"{name}-vault", soft_delete_days=90, purge_protection=True, tenant_id=t["id"]
    )
    vaults.create_key(rt, vault["name"], f"{name}-key", "RSA", 2048)
    side = Side(tenant=t, env=env, env2=env2, vault=vault, key=f"{name}-key")
    policies = _policies()
    if policies is not None:
        side.policy = policies.create_policy(
            rt, t["id"], f"{name}-policy", region=env["region"], vault=vault["name"], key=f"{name}-key"
        )
    from keyshift.jobs import store

    with rt.transaction() as s:
        job = store.create_job(rt, s, "link", environment_id=env2["id"], tenant_id=t["id"])
        side.job = job.id
    _features(rt, side)
    return side


PROBE_TABLE = "probe_table"  # the table routeprobe names in paths


def _features(rt: Runtime, side: Side) -> None:
    """The feature storages on the probed environment: a searchable probe table and a backup."""
    from keyshift.features import backups, search_jobs
    from keyshift.jobs.runner import Worker
    from keyshift.stores.records import RecordStore

    env_id = side.env["id"]
    for feature in ("search", "data-lake", "long-term-retention"):
        environments.enable_feature(rt, env_id, feature)
    RecordStore(rt, env_id).put(PROBE_TABLE, "probe-1", {"name": "probe"})
    view = search_jobs.set_fields(rt, env_id, PROBE_TABLE, ["name"])
    assert Worker(rt).run_job(view["job"]) == "succeeded"
    side.backup = backups.create_backup(rt, env_id)["id"]
    from keyshift.features import lake

    side.export = lake.export_table(rt, env_id, PROBE_TABLE)["path"]


def build_world(rt: Runtime) -> World:
    w = World(alpha=_side(rt, "alpha"), beta=_side(rt, "beta"))
    specs = {
        "operator": ("operator", {}),
        "alpha_admin": ("tenant_admin", {"tenant": "alpha"}),
        "beta_admin": ("tenant_admin", {"tenant": "beta"}),
        "reader": ("reader", {}),
        "alpha_reader": ("reader", {"tenant": "alpha"}),
        "alpha_service": ("service", {"envs": [w.alpha.env["id"]]}),
    }
    for label, (role, kw) in specs.items():
        view = tokens.create_token(rt, role, **kw)
        w.tokens[label] = view["token"]
        w.token_ids[label] = view["id"]
    return w
