"""Worker heartbeats: one row per running `keyshift worker`, refreshed while it lives.

A worker inserts its row when it starts, refreshes `last_heartbeat_at` every few seconds and deletes
the row when it stops cleanly. A row whose heartbeat is older than its `ttl_seconds` belongs to a
worker that died or lost the database: `keyshift worker status` reports it as lost, and the
metrics expose how many are live and lost.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from keyshift.db.base import Base
from keyshift.db.types import UTCDateTime


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeats"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # the worker's lease owner id
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ttl_seconds: Mapped[float] = mapped_column(Float)
    current_job: Mapped[str | None] = mapped_column(String(40))
