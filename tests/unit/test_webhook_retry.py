"""When a failed webhook delivery is tried again: the schedule, its jitter, Retry-After, giving up."""

from __future__ import annotations

import random
from datetime import timedelta

from smartsvc.config import load_settings
from smartsvc.services.webhook_delivery import body_bytes, message_id, next_delay

SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


def test_the_default_schedule_is_the_specified_one():
    settings = load_settings({"SMARTSVC_VAR_DIR": "/tmp/unused"})
    assert settings.webhook_retry_schedule == SCHEDULE
    assert settings.webhook_disable_after_s == 5 * 86400
    custom = load_settings({"SMARTSVC_WEBHOOK_RETRY_SCHEDULE": "0, 1,60", "SMARTSVC_VAR_DIR": "/tmp/unused"})
    assert custom.webhook_retry_schedule == (0, 1, 60)


def test_each_wait_is_the_schedule_within_ten_percent_and_then_it_gives_up():
    rng = random.Random(7)
    for attempts_done, base in enumerate(SCHEDULE):
        waits = [next_delay(SCHEDULE, attempts_done, None, rng).total_seconds() for _ in range(200)]
        assert base * 0.9 <= min(waits) and max(waits) <= base * 1.1
        if base:
            assert len(set(waits)) > 100  # jittered: failures together do not retry together
    assert next_delay(SCHEDULE, len(SCHEDULE), None, rng) is None


def test_a_longer_retry_after_wins_and_a_shorter_one_does_not():
    rng = random.Random(1)
    assert next_delay(SCHEDULE, 1, 120, rng) == timedelta(seconds=120)
    assert next_delay(SCHEDULE, 2, 1, rng) >= timedelta(seconds=270)
    assert next_delay(SCHEDULE, 1, 10 * 86400, rng) == timedelta(days=1)  # capped


def test_the_message_id_and_body_are_stable():
    import uuid

    delivery = uuid.UUID("01234567-89ab-7def-8123-456789abcdef")
    assert message_id(delivery) == "msg_0123456789ab7def8123456789abcdef"
    assert body_bytes({"type": "webhook.test", "data": {"é": 1}}) == '{"type":"webhook.test","data":{"é":1}}'.encode()
