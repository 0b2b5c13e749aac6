"""Identifiers: time-ordered UUIDs (version 7, RFC 9562).

Time order lets lists page by id (keyset pagination) without a second
sort column, and keeps B-tree inserts local. Within one process ids are
strictly increasing, even inside one millisecond (RFC 9562 method 3:
the random part is bumped by one when the clock has not moved).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = 0
_TIME_SHIFT = 80
_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)
_RAND_A_MASK = 0xFFF << 64
_RAND_B_MASK = (1 << 62) - 1


def _compose(millis: int, rand: int) -> int:
    value = (millis & ((1 << 48) - 1)) << _TIME_SHIFT
    value |= _VERSION_AND_VARIANT
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= rand & _RAND_B_MASK  # rand_b, 62 bits
    return value


def _bump(value: int) -> int:
    """The next id after ``value`` in the same millisecond (random bits + 1)."""
    rand_b = (value & _RAND_B_MASK) + 1
    rand_a = (value & _RAND_A_MASK) >> 64
    if rand_b > _RAND_B_MASK:
        rand_b, rand_a = 0, rand_a + 1
    millis = value >> _TIME_SHIFT
    if rand_a > 0xFFF:  # 2^74 ids in one millisecond: borrow the next one
        millis, rand_a = millis + 1, 0
    return (millis << _TIME_SHIFT) | _VERSION_AND_VARIANT | (rand_a << 64) | rand_b


def new_id() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 bits, increasing."""
    global _last
    millis = time.time_ns() // 1_000_000
    candidate = _compose(millis, int.from_bytes(os.urandom(10), "big"))
    with _lock:
        if candidate <= _last:
            candidate = _bump(_last)
        _last = candidate
    return uuid.UUID(int=candidate)
