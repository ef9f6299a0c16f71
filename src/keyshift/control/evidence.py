"""The vault's answer behind a decision (an environment disabled, a policy unhealthy), as shown.

Evidence records name the vault as a reference `{"id", "name"}` and the key by its name within that
vault, with the key `version` apart (docs/API.md, "Object shapes"). Records written before that
named the vault by name and the key as `vault/key@version`: `vault_and_key` reads both."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from keyshift.control.refs import Ref, vault_ref_by_name


def vault_and_key(s: Session, evidence: dict[str, Any]) -> tuple[Ref | None, str | None, str | None]:
    """(vault reference, key name, key version) of an evidence record, old or new."""
    vault = evidence.get("vault")
    key = evidence.get("key")
    version = evidence.get("version")
    if isinstance(vault, str):  # an older record: the vault's name, the key as vault/key@version
        vault = vault_ref_by_name(s, vault)
        if vault["id"] is None:  # the vault is gone: keep the reference shape, name only
            vault = None
        if isinstance(key, str) and "/" in key:
            key = key.split("/", 1)[1]
            if "@" in key:
                key, version = key.split("@", 1)
    elif not isinstance(vault, dict):
        vault = None
    return vault, key, version
