"""All tables. Importing this package registers every model on `Base.metadata`."""

from keyshift.db.base import Base
from keyshift.db.models.auth import ApiToken
from keyshift.db.models.control import (
    AdminAuditEvent,
    ByokKey,
    Dek,
    DekWrap,
    Environment,
    Policy,
    Tenant,
    VaultRecord,
)
from keyshift.db.models.data import DataAuditRow, DataFile, DataFileChunk, DataRecord
from keyshift.db.models.features import Backup, LakeExport, SearchIndex, SearchPosting
from keyshift.db.models.jobs import Job, JobBatch
from keyshift.db.models.vault import LocalKey, LocalKeyGrant, LocalKeyVersion
from keyshift.db.models.workers import WorkerHeartbeat

__all__ = [
    "AdminAuditEvent",
    "ApiToken",
    "Backup",
    "Base",
    "ByokKey",
    "DataAuditRow",
    "DataFile",
    "DataFileChunk",
    "DataRecord",
    "Dek",
    "DekWrap",
    "Environment",
    "Job",
    "JobBatch",
    "LakeExport",
    "LocalKey",
    "LocalKeyGrant",
    "LocalKeyVersion",
    "Policy",
    "SearchIndex",
    "SearchPosting",
    "Tenant",
    "VaultRecord",
    "WorkerHeartbeat",
]
