"""References between objects, as every JSON shape gives them: `{"id": ..., "name": ...}`.

One shape for a reference everywhere (service views, CLI `--json`, REST API, SDK; docs/API.md
"Object shapes"): the id never changes, the name is what people read. Objects without a name (jobs,
backups) are referenced with `"name": null`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyshift.db.models import Environment, Policy, Tenant, VaultRecord

Ref = dict[str, Any]


def ref(ident: str | None, name: str | None) -> Ref | None:
    """`{"id", "name"}`, or None when there is no id (no reference)."""
    return {"id": ident, "name": name} if ident else None


def row_ref(row: Any) -> Ref | None:
    """The reference of a loaded row (anything with `id` and `name`), or None."""
    return ref(row.id, row.name) if row is not None else None


def tenant_ref(s: Session, tenant_id: str | None) -> Ref | None:
    return ref(tenant_id, _name(s, Tenant, tenant_id))


def environment_ref(s: Session, env_id: str | None) -> Ref | None:
    return ref(env_id, _name(s, Environment, env_id))


def policy_ref(s: Session, policy_id: str | None) -> Ref | None:
    return ref(policy_id, display_name(_name(s, Policy, policy_id)))


def vault_ref(s: Session, vault_id: str | None) -> Ref | None:
    return ref(vault_id, _name(s, VaultRecord, vault_id))


def vault_ref_by_name(s: Session, vault_name: str) -> Ref:
    """A vault reference from its name (key views know their vault by name)."""
    vid = s.scalars(select(VaultRecord.id).where(VaultRecord.name == vault_name)).first()
    return {"id": vid, "name": vault_name}


def names(s: Session, model: Any, ids: Iterable[str | None]) -> dict[str, str]:
    """id -> name for many rows of one model at once (for lists)."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    rows = s.execute(select(model.id, model.name).where(model.id.in_(wanted))).all()
    return {i: n for i, n in rows}


def _name(s: Session, model: Any, ident: str | None) -> str | None:
    if not ident:
        return None
    row = s.get(model, ident)
    return getattr(row, "name", None)


def display_name(name: str | None) -> str | None:
    """A deleted policy keeps its row under `<name>~deleted~<id>`: show the name it had."""
    return name.split("~deleted~", 1)[0] if name else name
