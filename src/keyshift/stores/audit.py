"""Audit events of one environment: append, query by time range, retention purge.

Two backends behind one interface: the document store (default; stores/docstore.py) and the SQL
layout (`data_audit` in the state database, for legacy BYOK environments). `env.stores["audit"]`
picks the one that takes writes; during a move ("audit_from": "sql") queries see both.

Each event's payload is encrypted (DEK store "audit"), associated data = (tenant, environment,
"audit", "events", event id); the plaintext holds the timestamp again, checked on read, so moving
an event in time is detected. Plaintext metadata: environment id, event id, timestamp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from keyshift.clock import utc
from keyshift.control import audit_trail
from keyshift.crypto.dek import DataKeyExhaustedError
from keyshift.crypto.records import AssociatedData
from keyshift.db.models import DataAuditRow
from keyshift.db.types import new_id
from keyshift.errors import AlreadyExistsError, ConflictError, IntegrityError, UsageError
from keyshift.runtime import Runtime
from keyshift.stores.docstore import as_doc, audit_events, document_store, from_doc
from keyshift.stores.envstate import EnvView, env_states
from keyshift.stores.keys import data_keys
from keyshift.stores.layout import choose
from keyshift.timefmt import iso_z

STORE = "audit"
COLLECTION = "events"
MAX_EVENT_BYTES = 1 << 20
MAX_LIMIT = 10_000
RETENTION_FEATURE = "audit-retention"

_SQL: Table = DataAuditRow.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    at: datetime
    blob: bytes


class AuditBackend(Protocol):
    name: str

    def append(self, env_id: str, event_id: str, at: datetime, dek_hex: str, blob: bytes) -> None: ...

    def query(
        self, env_id: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[StoredEvent]: ...

    def purge(self, env_id: str, before: datetime) -> int: ...

    def count(self, env_id: str) -> int: ...


def _range(table: Any, env_id: str, since: datetime | None, until: datetime | None) -> Any:
    stmt = select(table.c.event_id, table.c.at, table.c.seq).where(table.c.environment_id == env_id)
    if since is not None:
        stmt = stmt.where(table.c.at >= since)
    if until is not None:
        stmt = stmt.where(table.c.at < until)
    return stmt


class SqlAudit:
    """Audit rows inside the state database (legacy BYOK layout)."""

    name = "sql"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def append(self, env_id: str, event_id: str, at: datetime, dek_hex: str, blob: bytes) -> None:
        with self.rt.transaction() as s:
            s.execute(
                insert(_SQL).values(
                    environment_id=env_id, event_id=event_id, at=at, dek_id=dek_hex, payload=blob
                )
            )

    def query(
        self, env_id: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[StoredEvent]:
        stmt = (
            _range(_SQL, env_id, since, until)
            .add_columns(_SQL.c.payload)
            .order_by(_SQL.c.at, _SQL.c.seq)
            .limit(limit)
        )
        with self.rt.transaction() as s:
            return [StoredEvent(eid, utc(at), bytes(p)) for eid, at, _seq, p in s.execute(stmt)]

    def purge(self, env_id: str, before: datetime) -> int:
        with self.rt.transaction() as s:
            res = s.execute(delete(_SQL).where(_SQL.c.environment_id == env_id, _SQL.c.at < before))
            return int(res.rowcount)  # type: ignore[attr-defined]

    def count(self, env_id: str) -> int:
        from sqlalchemy import func

        with self.rt.transaction() as s:
            return int(s.execute(select(func.count()).where(_SQL.c.environment_id == env_id)).scalar_one())


class DocumentAudit:
    """Audit documents in the document store (embedded SQLite file or PostgreSQL JSONB)."""

    name = "document"

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @property
    def engine(self) -> Engine:
        return document_store(self.rt).engine

    def append(self, env_id: str, event_id: str, at: datetime, dek_hex: str, blob: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(audit_events).values(
                    environment_id=env_id, event_id=event_id, at=at, doc=as_doc(dek_hex, blob)
                )
            )

    def query(
        self, env_id: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[StoredEvent]:
        t = audit_events
        stmt = _range(t, env_id, since, until).add_columns(t.c.doc).order_by(t.c.at, t.c.seq).limit(limit)
        with self.engine.begin() as conn:
            rows = conn.execute(stmt).all()
        out = []
        for eid, at, _seq, doc in rows:
            try:
                blob = from_doc(doc)
            except IntegrityError:
                raise IntegrityError(f"audit event {eid} is malformed in the document store") from None
            out.append(StoredEvent(eid, utc(at), blob))
        return out

    def purge(self, env_id: str, before: datetime) -> int:
        t = audit_events
        with self.engine.begin() as conn:
            res = conn.execute(delete(t).where(t.c.environment_id == env_id, t.c.at < before))
            return int(res.rowcount)

    def count(self, env_id: str) -> int:
        from sqlalchemy import func

        t = audit_events
        with self.engine.begin() as conn:
            return int(conn.execute(select(func.count()).where(t.c.environment_id == env_id)).scalar_one())


def backend(rt: Runtime, name: str) -> AuditBackend:
    return DocumentAudit(rt) if name == "document" else SqlAudit(rt)


def _check_range(since: datetime | None, until: datetime | None, limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}", code="invalid_limit")
    for v in (since, until):
        if v is not None and (not isinstance(v, datetime) or v.tzinfo is None):
            raise UsageError("since/until must be timezone-aware datetimes", code="invalid_time")
    if since is not None and until is not None and until < since:
        raise UsageError("until is before since", code="invalid_time")


class AuditLog:
    """The audit log of one environment. Obtain through `stores.service.EnvironmentData`."""

    def __init__(self, rt: Runtime, env_id: str) -> None:
        self.rt = rt
        self.env_id = env_id
        self._keys = data_keys(rt)
        self._states = env_states(rt)

    def _ad(self, env: EnvView, event_id: str) -> AssociatedData:
        return AssociatedData(env.tenant_id, env.id, STORE, COLLECTION, event_id)

    def append(
        self, event: dict[str, Any], *, event_id: str | None = None, at: datetime | None = None
    ) -> str:
        """Append one event (a JSON object); returns its id. `event_id`/`at`: for moves and restores."""
        if not isinstance(event, dict):
            raise UsageError("an audit event is a JSON object", code="invalid_value")
        when = utc(at) if at is not None else self.rt.clock.now()
        try:
            plain = json.dumps(
                {"at": when.isoformat(), "event": event},
                ensure_ascii=False,
                allow_nan=False,
                separators=(",", ":"),
            ).encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate has no UTF-8 form; the codec's message would quote it and its position.
            raise UsageError(
                "event holds text that is not valid Unicode (a lone surrogate)", code="invalid_value"
            ) from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"event is not JSON-serialisable: {exc}", code="invalid_value") from None
        if len(plain) > MAX_EVENT_BYTES:
            raise UsageError(f"an audit event holds at most {MAX_EVENT_BYTES} bytes", code="value_too_large")
        eid = event_id or new_id("evt")
        if len(eid) > 40:
            raise UsageError("event ids are at most 40 characters", code="invalid_id")
        env = self._states.require_usable(self.env_id)
        choice = choose(env, "audit")
        blob = self._encrypt(env, eid, plain)
        try:
            backend(self.rt, choice.backend).append(env.id, eid, when, blob[4:20].hex(), blob)
        except SqlIntegrityError:
            raise AlreadyExistsError(f"audit event {eid} already exists", code="event_exists") from None
        return eid

    def _encrypt(self, env: EnvView, eid: str, plain: bytes) -> bytes:
        for _ in range(4):
            cipher = self._keys.cipher(self.rt, env, STORE)
            try:
                blob = cipher.encrypt(plain, self._ad(env, eid))
            except DataKeyExhaustedError:
                self._keys.roll(self.rt, env, STORE, cipher.keyring.primary.id)
                continue
            self._keys.note_use(env.id, cipher.keyring.primary.id, len(plain))
            return blob
        raise ConflictError("could not obtain an audit data key", code="dek_unavailable")

    def decrypt_event(self, env: EnvView, ev: StoredEvent) -> dict[str, Any]:
        """Decrypt and authenticate one stored event: {"id", "at", "event"}; IntegrityError if tampered."""
        try:
            if len(ev.blob) < 20:
                raise IntegrityError("ciphertext is malformed")
            cipher = self._keys.decrypter(self.rt, env, STORE, bytes(ev.blob[4:20]))
            body = json.loads(cipher.decrypt(ev.blob, self._ad(env, ev.event_id)))
            if utc(datetime.fromisoformat(body["at"])) != ev.at:
                raise IntegrityError("timestamp mismatch")
        except (IntegrityError, ValueError, KeyError, TypeError):
            raise IntegrityError(
                f"audit event {ev.event_id} of environment {env.name!r} failed authentication"
            ) from None
        return {"id": ev.event_id, "at": iso_z(ev.at), "event": body["event"]}

    def query(
        self, since: datetime | None = None, until: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Events with since <= at < until in time order, at most `limit`."""
        _check_range(since, until, limit)
        env = self._states.require_usable(self.env_id)
        choice = choose(env, "audit")
        events = backend(self.rt, choice.backend).query(env.id, since, until, limit)
        if choice.legacy is not None:
            seen = {e.event_id for e in events}
            old = [
                e
                for e in backend(self.rt, choice.legacy).query(env.id, since, until, limit)
                if e.event_id not in seen
            ]
            # Stable merge by time: legacy events first among equals (they were written earlier).
            events = sorted(old + events, key=lambda e: e.at)[:limit]
        return [self.decrypt_event(env, e) for e in events]

    def purge_older_than(self, days: int) -> int:
        """Delete events older than `days` days; only with the environment's audit-retention feature."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36_500:
            raise UsageError("days must be an integer between 1 and 36500", code="invalid_days")
        env = self._states.require_usable(self.env_id)
        if RETENTION_FEATURE not in env.features:
            err = ConflictError(
                f"environment {env.name!r} does not have the {RETENTION_FEATURE} feature",
                code="feature_not_enabled",
            )
            audit_trail.record_failure(
                self.rt,
                "audit.purge",
                err,
                target_type="environment",
                target_id=env.id,
                tenant_id=env.tenant_id,
            )
            raise err
        before = self.rt.clock.now() - timedelta(days=days)
        choice = choose(env, "audit")
        count = backend(self.rt, choice.backend).purge(env.id, before)
        if choice.legacy is not None:
            count += backend(self.rt, choice.legacy).purge(env.id, before)
        with self.rt.transaction() as s:
            audit_trail.record(
                self.rt,
                s,
                "audit.purge",
                target_type="environment",
                target_id=env.id,
                tenant_id=env.tenant_id,
                details={"older_than_days": days, "before": iso_z(before), "purged": count},
            )
        return count
