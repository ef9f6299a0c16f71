"""Where an admin-center error page links back to: the object the failed request was about.

A failed action (`POST /vaults/v/keys/k/rotate`) links to its object's page (`/vaults/v/keys/k`).
When the object itself is missing (`key_not_found`, or a 404 on the object's own page) the link goes
one level up, to the object that contains it, so the link never leads to the same error again.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

# First path segments of the admin center's object pages.
_COLLECTIONS = frozenset({"environments", "policies", "vaults", "tenants", "jobs", "tokens"})
# A "not found" code names a missing object: (its collection, index of its container's level).
_MISSING = {
    "environment_not_found": ("environments", 0),
    "policy_not_found": ("policies", 0),
    "vault_not_found": ("vaults", 0),
    "tenant_not_found": ("tenants", 0),
    "job_not_found": ("jobs", 0),
    "token_not_found": ("tokens", 0),
    "key_not_found": ("vaults", 1),
}
HOME = "/environments"


@dataclass(frozen=True)
class BackLink:
    url: str
    label: str


def _levels(parts: list[str]) -> list[BackLink]:
    """Links from the collection down to the most specific object named in the path."""
    collection = parts[0]
    out = [BackLink(f"/{collection}", f"Back to {collection}")]
    if len(parts) >= 2:
        out.append(BackLink(f"/{collection}/{quote(parts[1], safe='')}", f"Back to {parts[1]}"))
    if collection == "vaults" and len(parts) >= 4 and parts[2] == "keys":
        url = f"/vaults/{quote(parts[1], safe='')}/keys/{quote(parts[3], safe='')}"
        out.append(BackLink(url, f"Back to key {parts[3]}"))
    return out


def back_link(method: str, path: str, code: str) -> BackLink:
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in _COLLECTIONS:
        return BackLink(HOME, "Back to environments")
    levels = _levels(parts)
    depth = len(levels) - 1
    if levels[depth].url == "/" + "/".join(quote(p, safe="") for p in parts):
        depth -= 1  # the object's own page failed: its container (the page would fail again)
    missing = _MISSING.get(code)
    if missing is not None and missing[0] == parts[0]:
        depth = min(depth, missing[1])
    link = levels[max(0, depth)]
    if method == "GET" and link.url == path:
        return BackLink(HOME, "Back to environments")
    return link
