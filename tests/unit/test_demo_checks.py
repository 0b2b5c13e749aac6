"""The demo's checks: it refuses to claim a difference the data does not show; its clock is the process's."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from smartsvc.demo import scenario
from smartsvc.demo.steps import Account, Trip, compare
from smartsvc.demo.world import DemoFailed, SimulatedClock
from smartsvc.timeutil import simulated_clock, utcnow


def spot(feature: str, length_m: float, distance_m: float) -> dict:
    return {"id": f"ds.{feature}", "length_m": length_m, "distance_m": distance_m, "spaces_for_vehicle": 1,
            "source": {"dataset": "ds", "feature_id": feature}}


def trip(driver: scenario.Driver, spots: list[dict]) -> Trip:
    account = Account(driver, "u", "t", "p", "d", ["location", "proactive_push"])
    return Trip(account, suggestion={"payload": {"spots": spots}})


def test_curbs_only_the_small_car_fits_are_found():
    small = trip(scenario.LENA, [spot("162", 6.13, 8), spot("166", 8.27, 11)])
    long = trip(scenario.MAX, [spot("166", 8.27, 11), spot("165", 36.07, 14)])
    difference = compare(small, long)
    assert [s["id"] for s in difference.only_small] == ["ds.162"]
    assert [pair[0]["id"] for pair in difference.shared] == ["ds.166"]
    assert difference.long_needs_m == pytest.approx(6.89)


def test_no_difference_in_the_data_fails_loudly_instead_of_claiming_one():
    same = [spot("166", 8.27, 11), spot("165", 36.07, 14)]
    with pytest.raises(DemoFailed, match="does not show"):
        compare(trip(scenario.LENA, same), trip(scenario.MAX, list(same)))


def test_a_curb_too_short_in_the_long_vehicles_push_fails_loudly():
    with pytest.raises(DemoFailed, match="shorter than"):
        compare(trip(scenario.LENA, [spot("162", 6.13, 8)]), trip(scenario.MAX, [spot("162", 6.13, 8)]))


def test_the_simulated_clock_is_every_use_cases_now_until_the_block_ends():
    clock = SimulatedClock(scenario.TRIP_START)
    with simulated_clock(clock):
        assert utcnow() == scenario.TRIP_START
        clock.set(datetime(2026, 5, 13, 17, 0, tzinfo=timezone.utc))
        clock.set(scenario.TRIP_START)  # never backwards
        assert utcnow() == datetime(2026, 5, 13, 17, 0, tzinfo=timezone.utc)
    assert abs((utcnow() - datetime.now(timezone.utc)).total_seconds()) < 60  # the real clock again
