"""The one data-plane service layer: `EnvironmentData(rt, env)` with `.records`, `.audit`, `.files`.

The SDK, the CLI and the REST API all go through it; none reaches the stores around it. Every call
checks the environment's state first (fail closed: disabled or locked -> exit 7).
"""

from __future__ import annotations

from typing import Any

from keyshift.runtime import Runtime
from keyshift.stores.audit import AuditLog
from keyshift.stores.envstate import check_usable, env_states
from keyshift.stores.files import FileStore
from keyshift.stores.layout import layout
from keyshift.stores.records import RecordStore


class EnvironmentData:
    """The data of one environment (named by name or id)."""

    def __init__(self, rt: Runtime, env: str) -> None:
        view = env_states(rt).resolve(env)
        if view.state == "deleted":
            check_usable(view)  # NotFoundError: deleted environments are gone for the data plane
        self.rt = rt
        self.id = view.id
        self.name = view.name
        self.records = RecordStore(rt, view.id)
        self.audit = AuditLog(rt, view.id)
        self.files = FileStore(rt, view.id)

    def check(self) -> None:
        """Raise the documented error if the environment may not be read or written right now."""
        env_states(self.rt).require_usable(self.id)

    def stores(self) -> dict[str, str]:
        """The effective backend of each kind of data (`env show` reports this)."""
        return layout(env_states(self.rt).get(self.id))

    def describe(self) -> dict[str, Any]:
        view = env_states(self.rt).get(self.id)
        return {"id": view.id, "name": view.name, "state": view.state, "stores": layout(view)}

    def __repr__(self) -> str:
        return f"EnvironmentData({self.name!r})"
