"""`key update V NAME --expires DATE|never [--version X]`: a vault admin extends, shortens or clears
the expiry of a key version — the way out of an expired key, as a real vault offers.

Only vaults whose adapter can change a version's expiry support it (the local vault); others are
refused with `unsupported_operation` (their own consoles do it). Refused on a deleted key
(`key_deleted`: recover it first). Audited by the adapter with the previous and new expiry.

After the expiry is extended, `env re-enable ENV` brings back the environments that were disabled
by the expiry. The other way out is `key rotate`: a new current version; the expired one keeps
unwrapping (decrypt-only), so `env re-enable` works and the rotation rewraps the data keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from keyshift.clock import parse_time
from keyshift.control import audit_trail
from keyshift.control.vaults import key_manager, key_view_of
from keyshift.errors import ConflictError, KeyshiftError, UsageError
from keyshift.runtime import Runtime

NEVER = "never"


def parse_expires(value: str | None) -> datetime | None:
    """`never` clears the expiry; anything else must be an ISO 8601 date/time."""
    if value is None or not value.strip():
        raise UsageError(
            "give --expires DATE (ISO 8601), or --expires never to clear it", code="expires_required"
        )
    if value.strip().lower() == NEVER:
        return None
    return parse_time(value)


def update_key_expiry(
    rt: Runtime, vault: str, name: str, expires: str | None, *, version: str | None = None
) -> dict[str, Any]:
    action = "key.update"
    target = f"{vault}/{name}"[:200]
    try:
        when = parse_expires(expires)
        vname, km = key_manager(rt, vault)
        update = getattr(km, "update_expiry", None)
        if not callable(update):
            raise ConflictError(
                f"vault {vname!r} does not let Keyshift change a key's expiry; change it in the vault "
                "itself, or rotate the key",
                code="unsupported_operation",
            )
    except KeyshiftError as exc:
        audit_trail.record_failure(rt, action, exc, target_type="key", target_id=target)
        raise
    return key_view_of(rt, update(name, when, version=version))  # the adapter audits success and refusal
