"""Retirement gating and `key retire`.

Gate: disabling, deleting or purging a key (or one version), or removing an identity's grant on it,
is refused with `key_in_use` (exit 4) while the key still covers data (control/coverage.py) — the
refusal names what is covered — unless the caller passes `force`, in which case the action runs and
an extra `<action>.forced` admin audit record carries the coverage it overrode. The gate runs in the
service layer every interface calls (control/vaults.py), before the vault adapter is asked, so it
applies to the local vault and to external vaults alike. Enabling, rotating and granting are never
gated.

Limitation: the check and the vault operation are not one transaction; a DEK created under the key
in between (a store's first write) is not seen by the gate. `key retire` first moves environments
off the version, which is the way to make the gate pass.

Retire: `retire(rt, vault, key, version)` starts a `rotate` job (the existing key-change job kind)
for each linked environment whose DEKs are still current under the version, says which
environments need another action (a pinned policy, a platform/BYOK binding), lists the retained
windows with their end dates, and reports whether the version is safe to disable now or from when.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from keyshift.control import audit_trail, coverage
from keyshift.control.common import get_vault_record
from keyshift.control.refs import display_name, ref
from keyshift.db.models import Environment, Policy
from keyshift.errors import ConflictError, KeyshiftError
from keyshift.runtime import Runtime
from keyshift.vaults.base import KeyRef

IN_USE = "key_in_use"


def _label(vault: str, key: str, version: str | None) -> str:
    return f"{vault}/{key}" + (f" version {version}" if version else "")


def gate(
    rt: Runtime,
    action: str,
    vault: str,
    key: str,
    *,
    version: str | None = None,
    identity: str | None = None,
    force: bool = False,
) -> dict[str, Any] | None:
    """Refuse `action` while the key (version / identity's wraps) covers data, unless `force`.

    Returns the coverage view when forced past a covered key (the caller audits it after the action
    succeeded, see `audit_forced`), else None. Refusals are audited here."""
    target = _label(vault, key, version)
    try:
        # The wraps alone decide; the counts (for the message / the audit) only when covered.
        view = coverage.key_coverage(rt, vault, key, version=version, identity=identity, counts=False)
        if not view["covered"]:
            return None
        view = coverage.key_coverage(rt, vault, key, version=version, identity=identity)
    except KeyshiftError as exc:
        audit_trail.record_failure(rt, action, exc, target_type="key", target_id=target[:200])
        raise
    covered = view["all_versions"]
    if not covered["covered"]:  # moved off between the two reads
        return None
    if force:
        return view
    who = f" (wraps made as {identity})" if identity else ""
    err = ConflictError(
        f"key {_label(view['vault']['name'], key, version)}{who} still covers data: "
        f"{coverage.summary(covered)}. "
        f"Run `keyshift key retire {view['vault']['name']} {key} --version V` to move it off, "
        "or pass --force.",
        code=IN_USE,
    )
    audit_trail.record_failure(rt, action, err, target_type="key", target_id=target[:200])
    raise err


def audit_forced(rt: Runtime, action: str, view: dict[str, Any], *, version: str | None = None) -> None:
    """The admin audit record of an action forced past the gate (with what it overrode)."""
    covered = view["all_versions"]
    with rt.transaction() as s:
        audit_trail.record(
            rt,
            s,
            f"{action}.forced",
            target_type="key",
            target_id=_label(view["vault"]["name"], view["key"], version)[:200],
            reason=f"forced while covering {coverage.summary(covered)}",
            details={
                "version": version,
                "identity": view.get("identity"),
                "environments": [e["name"] for e in covered["environments"]],
                "data_keys": covered["data_keys"],
                "totals": covered["totals"],
            },
        )


def retire(rt: Runtime, vault: str, key: str, version: str) -> dict[str, Any]:
    """Start what makes `version` unneeded and report what remains and when it is safe."""
    from keyshift.migrate.link import start_rotate

    target = _label(vault, key, version)
    try:
        with rt.transaction() as s:
            rec = get_vault_record(s, vault)
            vault_id, vname = rec.id, rec.name
        adapter = rt.vault(vname)
        info = adapter.describe(KeyRef(vname, key))
        info.version_info(version)  # NotFoundError for an unknown version
        current = info.current_version
        if current == version and _bound(rt, vault_id, key, version):
            raise ConflictError(
                f"version {version} is the current version of {vname}/{key} and environments are "
                "bound to it: rotate the key first (new data keys are wrapped under the current version)",
                code="version_is_current",
            )
        before = coverage.key_coverage(rt, vname, key, version=version)["versions"][0]
        started: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        blocked: list[dict[str, Any]] = []
        with rt.transaction() as s:
            for e in before["environments"]:
                if not (e["data_keys"]["current"] or e["data_keys"]["pending"]):
                    continue
                env = s.get(Environment, e["id"])
                if env is None:
                    continue
                policy = s.get(Policy, env.policy_id) if env.policy_id else None
                on_policy_key = (
                    policy is not None
                    and env.enc_mode == "cmk"
                    and (policy.vault_id, policy.key_name) == (vault_id, key)
                    and (env.kek_vault_id, env.kek_key_name) == (vault_id, key)
                )
                env_ref = {"id": env.id, "name": env.name}
                if policy is not None and on_policy_key and policy.key_version == version:
                    blocked.append(
                        {
                            "environment": env_ref,
                            "policy": {"id": policy.id, "name": display_name(policy.name)},
                            "reason": f"policy {display_name(policy.name)} pins version {version}",
                        }
                    )
                elif on_policy_key and env.kek_key_version != current:
                    job = start_rotate(rt, s, env, current)
                    if job is None:
                        from keyshift.jobs import store

                        other = store.running_job_for(s, env.id)
                        waiting.append(
                            {"environment": env_ref, "job": ref(other.id if other else None, None)}
                        )
                    else:
                        started.append({"environment": env_ref, "job": ref(job["id"], None)})
                elif on_policy_key:
                    # Bound to the current version already: the remaining DEKs wait on a running job.
                    waiting.append({"environment": env_ref, "job": None})
                else:
                    blocked.append(
                        {
                            "environment": env_ref,
                            "policy": ref(policy.id, display_name(policy.name)) if policy else None,
                            "reason": f"bound to {env.enc_mode} key, not through a policy on {vname}/{key}; "
                            "move it with a key change (policy add-env / swap-env)",
                        }
                    )
            ends = [w["until"] for w in before["retained_windows"]]
            active = bool(before["data_keys"]["current"] or before["data_keys"]["pending"])
            safe_after = None if active or not ends or None in ends else max(ends)
            result = {
                "vault": {"id": vault_id, "name": vname},
                "key": key,
                "version": version,
                "current_version": current,
                "safe_now": not before["covered"],
                "safe_after": safe_after,
                "jobs_started": started,
                "waiting_on_jobs": waiting,
                "needs_action": blocked,
                "retained_windows": before["retained_windows"],
                "coverage": {k: before[k] for k in ("data_keys", "totals", "tenants")},
                "summary": coverage.summary(before) if before["covered"] else "covers nothing",
            }
            audit_trail.record(
                rt,
                s,
                "key.retire",
                target_type="key",
                target_id=target[:200],
                details={
                    "jobs": [j["job"]["id"] for j in started],
                    "needs_action": [b["environment"]["name"] for b in blocked],
                    "safe_now": result["safe_now"],
                    "safe_after": safe_after,
                },
            )
        return result
    except KeyshiftError as exc:
        audit_trail.record_failure(rt, "key.retire", exc, target_type="key", target_id=target[:200])
        raise


def _bound(rt: Runtime, vault_id: str, key: str, version: str) -> list[str]:
    """Environments (not deleted) whose binding wraps new DEKs under this key version."""
    with rt.transaction() as s:
        return list(
            s.scalars(
                select(Environment.name).where(
                    Environment.kek_vault_id == vault_id,
                    Environment.kek_key_name == key,
                    Environment.state != "deleted",
                    or_(Environment.kek_key_version.is_(None), Environment.kek_key_version == version),
                )
            )
        )
