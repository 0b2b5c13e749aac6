"""UUIDv7 identifiers: version and variant bits, and time order."""

from __future__ import annotations

import time
import uuid

from smartsvc import ids


def test_ids_are_rfc_9562_version_7():
    for _ in range(200):
        value = ids.new_id()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_the_first_48_bits_are_the_unix_milliseconds():
    before = time.time_ns() // 1_000_000
    value = ids.new_id()
    after = time.time_ns() // 1_000_000

    assert before <= value.int >> 80 <= after


def test_ids_sort_in_the_order_of_their_creation_time(monkeypatch):
    start_ns = 1_760_000_000_000 * 1_000_000
    clock = iter(start_ns + ms * 1_000_000 for ms in range(300))
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock))

    created = [ids.new_id() for _ in range(300)]

    assert sorted(created) == created
    assert len(set(created)) == 300


def test_ids_created_in_the_same_millisecond_are_still_unique(monkeypatch):
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_760_000_000_000 * 1_000_000)

    created = {ids.new_id() for _ in range(1000)}

    assert len(created) == 1000
