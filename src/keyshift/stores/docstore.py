"""The document store: audit events of non-BYOK environments, outside the state database.

Embedded default: its own SQLite file HOME/audit.db with a JSON column; or PostgreSQL (JSONB) by
`settings.document_store_url`. One engine per runtime (closed with the runtime). The store owns its
schema: the table is created on first open (idempotent, safe when several processes race).

A document holds only ciphertext: {"v": 1, "dek": <hex id>, "ct": <base64 of the record blob>};
the plaintext columns are the environment id, the event id and the timestamp.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Engine, Index, Integer, MetaData, String, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError

from keyshift.db.engine import make_engine
from keyshift.db.types import UTCDateTime
from keyshift.runtime import Runtime

EXTENSION = "keyshift.stores.docstore"

metadata = MetaData()
audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("environment_id", String(40), nullable=False),
    Column("event_id", String(40), nullable=False, unique=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("doc", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Index("ix_audit_events_env_at", "environment_id", "at", "seq"),
)


def document_store_url(rt: Runtime) -> str:
    return rt.settings.document_store_url or f"sqlite:///{rt.settings.home_path() / 'audit.db'}"


class DocumentStore:
    """The engine of the document store, opened lazily; `close()` disposes it."""

    def __init__(self, rt: Runtime) -> None:
        self.url = document_store_url(rt)
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                engine = make_engine(self.url)
                try:
                    metadata.create_all(engine, checkfirst=True)
                except DBAPIError:
                    # Another process created it between the check and the create.
                    metadata.create_all(engine, checkfirst=True)
                self._engine = engine
            return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


def document_store(rt: Runtime) -> DocumentStore:
    return rt.extension(EXTENSION, DocumentStore)  # type: ignore[no-any-return]


def as_doc(dek_hex: str, blob: bytes) -> dict[str, Any]:
    import base64

    return {"v": 1, "dek": dek_hex, "ct": base64.b64encode(blob).decode("ascii")}


def from_doc(doc: Any) -> bytes:
    import base64
    import binascii

    from keyshift.errors import IntegrityError

    if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("ct"), str):
        raise IntegrityError("document is malformed")
    try:
        return base64.b64decode(doc["ct"], validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError("document is malformed") from None
