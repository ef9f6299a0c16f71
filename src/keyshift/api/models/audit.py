"""The admin audit trail."""

from __future__ import annotations

from typing import Any

from keyshift.api.models.base import Out, Ref, Timestamp


class AuditEvent(Out):
    """One admin audit row. `target` is a reference to the object acted on (its kind in
    `target_type`; `name` null for objects without one, such as jobs, tokens, keys and requests)."""

    id: int
    at: Timestamp
    principal: str
    action: str
    target_type: str
    target: Ref | None
    tenant: Ref | None
    outcome: str
    reason: str | None
    details: dict[str, Any]
