"""keyshift.crypto: pure functions and small classes for records, files and DEKs (no I/O).

Layouts are documented byte by byte in docs/FORMAT.md.
"""

from __future__ import annotations

from keyshift.crypto.cache import DekCache
from keyshift.crypto.dek import (
    BlockBudget,
    Budget,
    DataKey,
    DataKeyExhaustedError,
    Keyring,
    UsageBudget,
    generate_dek,
)
from keyshift.crypto.format import RecordHeader, StreamHeader
from keyshift.crypto.records import AdPrefix, AssociatedData, RecordCipher, dek_id_of
from keyshift.crypto.stream import (
    DecryptingReader,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    iter_encrypt,
    read_stream_header,
)

__all__ = [
    "AdPrefix",
    "AssociatedData",
    "BlockBudget",
    "Budget",
    "DataKey",
    "DataKeyExhaustedError",
    "DecryptingReader",
    "DekCache",
    "Keyring",
    "RecordCipher",
    "RecordHeader",
    "StreamHeader",
    "UsageBudget",
    "ciphertext_size",
    "decrypt_stream",
    "dek_id_of",
    "encrypt_stream",
    "generate_dek",
    "iter_encrypt",
    "read_stream_header",
]
