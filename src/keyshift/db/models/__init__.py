"""All tables. Importing this package registers every model on `Base.metadata`."""

from keyshift.db.base import Base
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

__all__ = [
    "AdminAuditEvent",
    "Base",
    "ByokKey",
    "Dek",
    "DekWrap",
    "Environment",
    "Policy",
    "Tenant",
    "VaultRecord",
]
