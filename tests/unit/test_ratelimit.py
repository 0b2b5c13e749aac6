"""The embedded rate-limit store counts like limits' memory:// without starting a thread per hit."""

from __future__ import annotations

import threading
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from smartsvc import ratelimit
from smartsvc.ratelimit import InlineExpiryMemoryStorage, storage_uri


def test_memory_urls_get_the_inline_expiry_store_and_others_are_kept():
    assert storage_uri("memory://") == "smartsvc-memory://"
    assert storage_uri("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert isinstance(storage_from_string(storage_uri("memory://")), InlineExpiryMemoryStorage)


def test_limits_are_enforced_without_a_thread_per_hit():
    storage = storage_from_string("smartsvc-memory://")
    time.sleep(0.05)  # the base class's one timer from __init__ is over
    threads = threading.active_count()
    fixed, moving = FixedWindowRateLimiter(storage), MovingWindowRateLimiter(storage)
    three = parse("3/minute")

    assert [fixed.hit(three, "a") for _ in range(4)] == [True, True, True, False]
    assert [moving.hit(three, "b") for _ in range(4)] == [True, True, True, False]
    assert fixed.hit(three, "c")
    assert threading.active_count() == threads


def test_expired_counters_are_swept_inline(monkeypatch):
    monkeypatch.setattr(ratelimit, "EXPIRY_INTERVAL_S", 0.0)
    storage = storage_from_string("smartsvc-memory://")
    storage.incr("gone", expiry=0.01)
    time.sleep(0.02)
    storage.incr("other", expiry=60)

    assert "gone" not in storage.storage and storage.get("other") == 1
