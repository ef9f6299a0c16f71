"""What the feature storages share: feature/restriction checks, their DEKs, their object storage.

* Features: search -> "search", data lake -> "data-lake", backups -> "long-term-retention". Each
  operation refuses an environment that is SQL-restricted (legacy BYOK tenant, not yet on a
  customer-managed key) with ConflictError code `sql_restriction`, and one whose feature is not on
  with code `feature_not_enabled` — the refusal is recorded in the admin audit trail.
* Storage creation: enabling a feature creates the store's DEK under the environment's current KEK
  right after the enable commits (a hook on control's FEATURE_ENABLED_HOOKS); if that fails (vault
  down) the DEK is created on first use instead, still under the then-current key.
* Objects (Parquet files, backup archives) live in the configured file storage, in a namespace of
  their own per environment (`<env id>.lake`, `<env id>.backups`), apart from the environment's files.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from keyshift.control import audit_trail
from keyshift.db.models import Environment
from keyshift.errors import ConflictError, KeyshiftError
from keyshift.runtime import Runtime
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.file_backends import FileBackend, backend
from keyshift.stores.keys import data_keys
from keyshift.stores.layout import sql_only

log = logging.getLogger("keyshift.features")

SEARCH = "search"
LAKE = "data-lake"
RETENTION = "long-term-retention"
STORE_OF = {SEARCH: "search", LAKE: "lake", RETENTION: "backup"}
_IDS = "keyshift.features.env_ids"


def refuse(rt: Runtime, action: str, env: EnvView, err: KeyshiftError) -> KeyshiftError:
    try:
        audit_trail.record_failure(
            rt, action, err, target_type="environment", target_id=env.id, tenant_id=env.tenant_id
        )
    except Exception:  # the refusal must reach the caller even if recording it fails
        log.warning("could not record refusal of %s", action)
    return err


def usable_env(rt: Runtime, ref: str, feature: str | None, action: str) -> EnvView:
    """The environment (enabled), with `feature` on and not SQL-restricted; else a clear refusal."""
    states = env_states(rt)
    ids: dict[str, str] = rt.extension(_IDS, lambda _rt: {})
    env_id = ids.get(ref)
    if env_id is None:  # names never change: resolve once per process, then use the state snapshot
        env_id = states.resolve(ref).id
        if len(ids) > 10_000:
            ids.clear()
        ids[ref] = env_id
    env = states.require_usable(env_id)
    if sql_only(env):
        raise refuse(
            rt,
            action,
            env,
            ConflictError(
                f"environment {env.name!r} is under the SQL restriction of its legacy BYOK tenant: "
                f"{feature or 'this'} needs storage outside SQL; migrate it to a customer-managed key first",
                code="sql_restriction",
            ),
        )
    if feature is not None and feature not in env.features:
        raise refuse(
            rt,
            action,
            env,
            ConflictError(
                f"environment {env.name!r} does not have the {feature} feature; "
                f"run `keyshift env feature enable {env.name} {feature}` first",
                code="feature_not_enabled",
            ),
        )
    return env


def objects(rt: Runtime) -> FileBackend:
    """The file storage holding lake files and backup archives (directory or S3)."""
    return backend(rt, "file_storage")


def namespace(env_id: str, kind: str) -> str:
    return f"{env_id}.{kind}"


# -- feature-enabled hook --------------------------------------------------------------------


def create_storage(rt: Runtime, env_id: str, feature: str) -> str | None:
    """Create the feature's DEK (if it has none) under the environment's current key."""
    store = STORE_OF.get(feature)
    if store is None:
        return None
    env = env_states(rt).require_usable(env_id)
    key, _ = data_keys(rt).primary(rt, env, store)
    return key.id.hex()


def _on_feature_enabled(rt: Runtime, session: Session, env: Environment, feature: str) -> None:
    if feature not in STORE_OF:
        return
    env_id = env.id

    def after_commit(_session: Any) -> None:
        # Vault calls never run inside a DB transaction: this runs once the enable has committed.
        env_states(rt).invalidate(env_id)
        try:
            create_storage(rt, env_id, feature)
        except Exception as err:  # the enable has committed; the DEK is then created on first use
            code = getattr(err, "code", type(err).__name__)
            log.warning("storage for %s not created yet (%s); it will be on first use", feature, code)

    event.listen(session, "after_commit", after_commit, once=True)


def register_hooks() -> None:
    from keyshift.control.environments import FEATURE_ENABLED_HOOKS

    if _on_feature_enabled not in FEATURE_ENABLED_HOOKS:
        FEATURE_ENABLED_HOOKS.append(_on_feature_enabled)
