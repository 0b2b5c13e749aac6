"""Quiet hours and the local day in the user's time zone: across midnight, and on daylight-saving days."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from smartsvc.services.attention import local_day, quiet_hours_end

BERLIN = "Europe/Berlin"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


@pytest.mark.parametrize(("now", "ends"), [
    # 23:00 on a winter evening in Berlin: quiet until 07:00 tomorrow.
    (local(BERLIN, 2026, 1, 14, 23, 0), local(BERLIN, 2026, 1, 15, 7, 0)),
    # 03:00 after midnight: the window that began yesterday, until 07:00 today.
    (local(BERLIN, 2026, 1, 15, 3, 0), local(BERLIN, 2026, 1, 15, 7, 0)),
    # The start is inside, the end is not.
    (local(BERLIN, 2026, 1, 15, 22, 0), local(BERLIN, 2026, 1, 16, 7, 0)),
    (local(BERLIN, 2026, 1, 15, 7, 0), None),
    (local(BERLIN, 2026, 1, 15, 12, 0), None),
    (local(BERLIN, 2026, 1, 15, 21, 59), None),
])
def test_quiet_hours_across_midnight(now, ends):
    assert quiet_hours_end(now, BERLIN, "22:00", "07:00") == ends


def test_quiet_hours_within_one_day():
    assert quiet_hours_end(local(BERLIN, 2026, 5, 4, 13, 0), BERLIN, "12:00", "14:00") == \
        local(BERLIN, 2026, 5, 4, 14, 0)
    assert quiet_hours_end(local(BERLIN, 2026, 5, 4, 23, 0), BERLIN, "12:00", "14:00") is None
    assert quiet_hours_end(local(BERLIN, 2026, 5, 4, 11, 59), BERLIN, "12:00", "14:00") is None


def test_no_quiet_hours_and_an_empty_window():
    now = local(BERLIN, 2026, 1, 15, 3, 0)
    assert quiet_hours_end(now, BERLIN, None, None) is None
    assert quiet_hours_end(now, BERLIN, "03:00", "03:00") is None


def test_quiet_hours_are_read_in_the_users_zone():
    # 04:00 UTC is 23:00 the evening before in New York (winter, UTC-5): quiet until 06:00 there.
    now = utc(2026, 1, 1, 4, 0)
    assert quiet_hours_end(now, "America/New_York", "22:00", "06:00") == utc(2026, 1, 1, 11, 0)
    # ...and 13:00 in Tokyo: not quiet.
    assert quiet_hours_end(now, "Asia/Tokyo", "22:00", "06:00") is None


def test_the_night_the_clocks_go_forward_is_an_hour_shorter():
    # Berlin, 29 March 2026: 02:00 CET becomes 03:00 CEST.
    evening = local(BERLIN, 2026, 3, 28, 23, 0)
    ends = quiet_hours_end(evening, BERLIN, "22:00", "07:00")
    assert ends == utc(2026, 3, 29, 5, 0)  # 07:00 CEST
    assert ends - local(BERLIN, 2026, 3, 28, 22, 0) == timedelta(hours=8)


def test_quiet_hours_ending_inside_the_skipped_hour_end_when_the_clock_jumps():
    # 02:30 does not exist on 29 March 2026 in Berlin: the clock passes it at 03:00 CEST (01:00 UTC).
    now = local(BERLIN, 2026, 3, 29, 1, 30)
    assert quiet_hours_end(now, BERLIN, "22:00", "02:30") == utc(2026, 3, 29, 1, 0)
    # Quiet hours starting in the skipped hour start when the clock jumps too.
    assert quiet_hours_end(utc(2026, 3, 29, 1, 0), BERLIN, "02:30", "06:00") == local(BERLIN, 2026, 3, 29, 6, 0)
    assert quiet_hours_end(utc(2026, 3, 29, 0, 59), BERLIN, "02:30", "06:00") is None


def test_the_night_the_clocks_go_back_ends_at_the_first_reading():
    # Berlin, 25 October 2026: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice; the first counts.
    now = local(BERLIN, 2026, 10, 25, 1, 30)
    assert quiet_hours_end(now, BERLIN, "01:00", "02:30") == utc(2026, 10, 25, 0, 30)
    evening = local(BERLIN, 2026, 10, 24, 22, 0)
    assert quiet_hours_end(evening, BERLIN, "22:00", "07:00") - evening == timedelta(hours=10)


def test_the_local_day_follows_the_zone_and_its_clock_changes():
    assert local_day(utc(2026, 1, 1, 20, 0), "Asia/Tokyo") == (utc(2026, 1, 1, 15, 0), utc(2026, 1, 2, 15, 0))
    assert local_day(utc(2026, 1, 1, 20, 0), "UTC") == (utc(2026, 1, 1), utc(2026, 1, 2))
    start, end = local_day(local(BERLIN, 2026, 3, 29, 12, 0), BERLIN)
    assert (start, end - start) == (utc(2026, 3, 28, 23, 0), timedelta(hours=23))
    start, end = local_day(local(BERLIN, 2026, 10, 25, 12, 0), BERLIN)
    assert (start, end - start) == (utc(2026, 10, 24, 22, 0), timedelta(hours=25))
