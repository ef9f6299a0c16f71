"""What every file backend shares: the listing entry, the producer callback, size arithmetic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from keyshift.crypto.format import STREAM_HEADER_LEN, TAG_LEN
from keyshift.crypto.stream import DEFAULT_SEGMENT_SIZE

Produce = Callable[[BinaryIO], int]  # writes ciphertext to the sink, returns plaintext bytes
Keep = Callable[[], bool]  # asked just before a copy becomes visible: is it still wanted?


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int  # plaintext bytes


def plaintext_size(ciphertext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Plaintext size of a stream written with `segment_size` (every full segment + tag, then the last)."""
    body = ciphertext_size - STREAM_HEADER_LEN
    if body < TAG_LEN:
        return 0
    full = segment_size + TAG_LEN
    segments = -(-body // full)
    return body - segments * TAG_LEN
