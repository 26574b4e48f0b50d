"""UUIDv7 identifiers: time-ordered, so keyset pages and indexes follow creation order.

Python 3.11 has no ``uuid.uuid7`` (it arrives in 3.14); this is RFC 9562's layout with a
per-process monotonic counter in ``rand_a`` so ids made in one millisecond still sort.
"""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID

__all__ = ["uuid7"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> UUID:
    """A new UUIDv7 (48-bit ms timestamp, 12-bit counter, 62 random bits)."""
    global _last_ms, _counter  # noqa: PLW0603 - process-wide monotonic state
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # counter spent: borrow the next millisecond
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms, _counter = ms, 0
        counter = _counter
    rand = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return UUID(int=value)
