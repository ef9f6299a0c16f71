"""Random 96-bit AES-GCM record nonces, drawn from the OS CSPRNG in blocks.

Every nonce is 12 bytes straight from `os.urandom` — the same source and the same uniqueness
argument as one `os.urandom(12)` per record — but fetched `BLOCK` nonces per system call: one
`getrandom` costs about as much as encrypting a 1 KiB record, so drawing them one by one doubled
the per-record cost outside AES-GCM itself.

Safety of the pool:

* each nonce is handed out once: `deque.popleft` is atomic, so threads never share one, and a
  refill only ever appends fresh random bytes;
* a forked child starts with an empty pool (`os.register_at_fork`), so parent and child never draw
  the same buffered nonces;
* nonces are public (they are written in every record header), so buffering them exposes nothing.
"""

from __future__ import annotations

import os
import threading
from collections import deque

NONCE_LEN = 12
BLOCK = 1024  # nonces per system call (12 KiB of randomness)


class NoncePool:
    """Hands out distinct random 12-byte nonces; `take()` is safe from any thread."""

    def __init__(self, block: int = BLOCK) -> None:
        if block <= 0:
            raise ValueError("block must be > 0")
        self.block = block
        self._queue: deque[bytes] = deque()
        self._popleft = self._queue.popleft
        self._refill_lock = threading.Lock()
        self.refills = 0

    def take(self) -> bytes:
        try:
            return self._popleft()
        except IndexError:
            return self._refill_and_take()

    def _refill_and_take(self) -> bytes:
        while True:
            with self._refill_lock:
                if not self._queue:
                    raw = os.urandom(NONCE_LEN * self.block)
                    self._queue.extend([raw[i : i + NONCE_LEN] for i in range(0, len(raw), NONCE_LEN)])
                    self.refills += 1
            try:
                return self._popleft()
            except IndexError:  # other threads drained the block meanwhile: draw another
                continue

    def clear(self) -> None:
        """Forget every buffered nonce (called in a forked child)."""
        self._queue.clear()


POOL = NoncePool()
take = POOL.take
os.register_at_fork(after_in_child=POOL.clear)
