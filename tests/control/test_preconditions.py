"""check_can_link: each rule for adding an environment to a policy (docs/CONCEPTS.md) fails with
its own code."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from keyshift.control import environments, policies, tenants
from keyshift.control.preconditions import check_can_link
from keyshift.db.models import Environment, Policy, Tenant
from keyshift.errors import ConflictError
from keyshift.runtime import Runtime


@pytest.fixture
def linkable(ctl: Runtime) -> Runtime:
    """Tenant t, managed production env e1 (eu), healthy policy p (eu) — everything satisfied."""
    tenants.create_tenant(ctl, "t")
    tenants.create_tenant(ctl, "other")
    environments.create_environment(ctl, "t", "e1", env_type="production", region="eu")
    environments.set_managed(ctl, "e1", True)
    from keyshift.control import vaults as vault_service

    vault_service.create_local_vault(ctl, "cust", purge_protection=True)
    for tenant, name in (("t", "p"), ("t", "p2"), ("other", "po")):
        policies.create_policy(ctl, tenant, name, region="eu", vault="cust", key="k")
    with ctl.transaction() as s:  # health is policy health's business; here only its outcome matters
        for p in s.query(Policy):
            p.health = "healthy"
    return ctl


def _check(rt: Runtime, env: str = "e1", policy: str = "p") -> None:
    with rt.transaction() as s:
        check_can_link(
            rt,
            s,
            s.query(Environment).filter_by(name=env).one(),
            s.query(Policy).filter_by(name=policy).one(),
        )


def _env(**values: object) -> Callable[[Runtime], None]:
    def apply(rt: Runtime) -> None:
        with rt.transaction() as s:
            env = s.query(Environment).filter_by(name="e1").one()
            for k, v in values.items():
                setattr(env, k, v)

    return apply


def test_all_satisfied_passes(linkable: Runtime) -> None:
    _check(linkable)  # raises on any failure


def _policy_unhealthy(rt: Runtime) -> None:
    with rt.transaction() as s:
        s.query(Policy).filter_by(name="p").one().health = "unhealthy"


def _byok_on(rt: Runtime) -> None:
    with rt.transaction() as s:
        s.query(Tenant).filter_by(name="t").one().byok_feature = True


def _linked_elsewhere(rt: Runtime) -> None:
    with rt.transaction() as s:
        s.query(Environment).filter_by(name="e1").one().policy_id = (
            s.query(Policy).filter_by(name="p2").one().id
        )


def _linked_here(rt: Runtime) -> None:
    with rt.transaction() as s:
        s.query(Environment).filter_by(name="e1").one().policy_id = (
            s.query(Policy).filter_by(name="p").one().id
        )


CASES: list[tuple[str, Callable[[Runtime], None], str]] = [
    ("not managed", _env(managed=False), "env_not_managed"),
    ("other region", _env(region="us"), "region_mismatch"),
    ("trial", _env(type="trial"), "env_type_not_allowed"),
    ("teams", _env(type="teams"), "env_type_not_allowed"),
    ("byok flag on", _byok_on, "byok_feature_on"),
    ("policy unhealthy", _policy_unhealthy, "policy_not_healthy"),
    ("already has another policy", _linked_elsewhere, "env_has_policy"),
    ("already linked here", _linked_here, "already_linked"),
    ("disabled", _env(state="disabled"), "environment_not_enabled"),
    ("deleted", _env(state="deleted"), "environment_deleted"),
]


def test_each_rule_fails_with_its_own_code(linkable: Runtime) -> None:
    seen = set()
    for label, breaks, code in CASES:
        with linkable.transaction() as s:  # restore the all-satisfied state
            env = s.query(Environment).filter_by(name="e1").one()
            env.managed, env.region, env.type, env.state, env.policy_id = (
                True,
                "eu",
                "production",
                "enabled",
                None,
            )
            s.query(Tenant).filter_by(name="t").one().byok_feature = False
            s.query(Policy).filter_by(name="p").one().health = "healthy"
        _check(linkable)
        breaks(linkable)
        with pytest.raises(ConflictError) as info:
            _check(linkable)
        assert info.value.code == code, label
        seen.add(code)
    assert len(seen) == len({c for _, _, c in CASES})


def test_policy_of_another_tenant(linkable: Runtime) -> None:
    with pytest.raises(ConflictError) as info:
        _check(linkable, policy="po")
    assert info.value.code == "tenant_mismatch"


def test_other_job_running(linkable: Runtime) -> None:
    try:
        from keyshift.jobs.store import create_job
    except ImportError:
        pytest.skip("the jobs part (keyshift.jobs.store) is not installed")
    with linkable.transaction() as s:
        env = s.query(Environment).filter_by(name="e1").one()
        job = create_job(linkable, s, "rotate", environment_id=env.id, tenant_id=env.tenant_id)
        job_id = job.id
    with pytest.raises(ConflictError) as info:
        _check(linkable)
    assert info.value.code == "job_running"
    with linkable.transaction() as s:  # the link job itself does not block its own re-check
        env = s.query(Environment).filter_by(name="e1").one()
        check_can_link(linkable, s, env, s.query(Policy).filter_by(name="p").one(), job_id=job_id)
