"""The one data-plane service layer: `EnvironmentData(rt, env)` with `.records`, `.audit`, `.files`.

The SDK, the CLI and the REST API all go through it; none reaches the stores around it. Every call
checks the environment's state first (fail closed: disabled or locked -> exit 7).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from keyshift.observability.dataplane import instrument
from keyshift.runtime import Runtime
from keyshift.stores.envstate import check_usable, env_states
from keyshift.stores.layout import layout
from keyshift.stores.records import RecordStore

if TYPE_CHECKING:
    from keyshift.stores.audit import AuditLog
    from keyshift.stores.files import FileStore


class EnvironmentData:
    """The data of one environment (named by name or id)."""

    def __init__(self, rt: Runtime, env: str) -> None:
        view = env_states(rt).resolve(env)
        if view.state == "deleted":
            check_usable(view)  # NotFoundError: deleted environments are gone for the data plane
        self.rt = rt
        self.id = view.id
        self.name = view.name
        # Calls through these three are counted and timed (metrics keyshift_data_request*).
        self.records = instrument(RecordStore(rt, view.id), "records")

    # The audit and file stores load on first use (a CLI `data get` needs neither: start-up time).
    @cached_property
    def audit(self) -> AuditLog:
        from keyshift.stores.audit import AuditLog

        return instrument(AuditLog(self.rt, self.id), "audit")

    @cached_property
    def files(self) -> FileStore:
        from keyshift.stores.files import FileStore

        return instrument(FileStore(self.rt, self.id), "files")

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
