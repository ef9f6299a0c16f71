"""Turning an environment's feature off (enabling lives in control.environments).

Disabling only takes the feature off the environment: its stored data (search index, lake exports,
backups) is kept, encrypted under the environment's DEKs like before, so enabling the feature again
uses it. The change is audited as `environment.feature.disable`; other processes see it within
state_refresh_seconds, this one at once.
"""

from __future__ import annotations

from typing import Any

from keyshift.control.common import operation
from keyshift.control.environments import environment_view, feature_target
from keyshift.errors import ConflictError
from keyshift.runtime import Runtime


def disable_feature(rt: Runtime, ref: str, feature: str) -> dict[str, Any]:
    with operation(
        rt, "environment.feature.disable", target_type="environment", details={"feature": feature}
    ) as op:
        s = op.session
        env = feature_target(op, ref, feature)
        if feature not in (env.features or []):
            raise ConflictError(
                f"environment {env.name!r} does not have the {feature} feature on",
                code="feature_not_enabled",
            )
        env.features = [f for f in env.features if f != feature]
        s.flush()
        view = environment_view(rt, s, env)
        env_id = env.id
    _forget_cached_state(rt, env_id)
    return view


def _forget_cached_state(rt: Runtime, env_id: str) -> None:
    from keyshift.stores.envstate import env_states

    env_states(rt).invalidate(env_id)
