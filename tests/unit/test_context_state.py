"""The pure parts of the derived context: speed from fixes, distance and ETA to a destination, approach thresholds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from geographiclib.geodesic import Geodesic

from smartsvc.services.context_state import (
    approaching_reached, distance_to, eta_seconds, fix_speed, round_coordinate, speed_between, trip_progress,
)

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
BERLIN = (52.52, 13.405)


def north_of(metres: float) -> tuple[float, float]:
    out = Geodesic.WGS84.Direct(BERLIN[0], BERLIN[1], 0.0, metres)
    return out["lat2"], out["lon2"]


def fix(lat: float, lon: float, seconds: float = 0.0) -> dict:
    return {"lat": lat, "lon": lon, "at": (T0 + timedelta(seconds=seconds)).isoformat()}


def test_speed_from_two_fixes_is_distance_over_time():
    lat, lon = north_of(100)
    assert speed_between(fix(*BERLIN), lat, lon, T0 + timedelta(seconds=10)) == pytest.approx(10.0, rel=1e-3)


@pytest.mark.parametrize(("seconds", "metres"), [
    (0.2, 5),        # too close in time: noise
    (600, 1000),     # too far apart: says nothing about now
    (10, 50_000),    # 5 km/s: a jump, not a speed
])
def test_speed_is_unknown_when_the_fixes_cannot_tell(seconds, metres):
    lat, lon = north_of(metres)
    assert speed_between(fix(*BERLIN), lat, lon, T0 + timedelta(seconds=seconds)) is None


def test_speed_needs_a_previous_fix_and_a_reported_speed_wins():
    lat, lon = north_of(100)
    assert speed_between(None, lat, lon, T0) is None
    assert fix_speed(3.5, fix(*BERLIN), lat, lon, T0 + timedelta(seconds=10)) == 3.5
    assert fix_speed(None, fix(*BERLIN), lat, lon, T0 + timedelta(seconds=10)) == pytest.approx(10.0, rel=1e-3)


def test_distance_is_geodesic_metres():
    lat, lon = north_of(2500)
    assert distance_to(fix(*BERLIN), {"lat": lat, "lon": lon}) == pytest.approx(2500, abs=0.5)
    assert distance_to(None, {"lat": lat, "lon": lon}) is None
    assert distance_to(fix(*BERLIN), None) is None


def test_eta_is_distance_over_speed_and_none_when_still():
    assert eta_seconds(2000, 10, "driving") == pytest.approx(200)
    assert eta_seconds(2000, 10, None) == pytest.approx(200)
    assert eta_seconds(2000, 10, "still") is None
    assert eta_seconds(2000, 0.1, "walking") is None  # GPS drift of a parked phone
    assert eta_seconds(2000, None, "driving") is None
    assert eta_seconds(None, 10, "driving") is None


def test_trip_progress_counts_the_eta_from_the_fix():
    lat, lon = north_of(1500)
    trip = {"destination": {"lat": lat, "lon": lon}}
    progress = trip_progress(trip, fix(*BERLIN, seconds=30), 15.0, {"value": "driving", "at": T0.isoformat()})
    assert progress is not None
    assert progress.distance_m == pytest.approx(1500, abs=0.5)
    assert progress.eta_s == pytest.approx(100, abs=0.1)
    assert progress.eta == T0 + timedelta(seconds=30) + timedelta(seconds=progress.eta_s)
    assert trip_progress(None, fix(*BERLIN), 15.0, None) is None
    no_fix = trip_progress(trip, None, 15.0, None)
    assert no_fix is not None and no_fix.distance_m is None and no_fix.eta is None


@pytest.mark.parametrize(("trigger", "distance", "eta", "reached"), [
    ({"within_m": 1500}, 1499.0, None, True),
    ({"within_m": 1500}, 1500.0, None, True),
    ({"within_m": 1500}, 1501.0, 10.0, False),
    ({"within_s": 120}, 5000.0, 119.0, True),
    ({"within_s": 120}, 5000.0, None, False),
    ({"within_m": 500, "within_s": 60}, 800.0, 50.0, True),   # the first of the two reached
    ({"within_m": 500, "within_s": 60}, 800.0, 70.0, False),
    ({"within_m": 500}, None, None, False),
])
def test_a_rules_own_threshold_decides_the_approach(trigger, distance, eta, reached):
    assert approaching_reached({"event": "trip.approaching", **trigger}, distance, eta) is reached


def test_coordinates_are_rounded_to_six_decimals():
    assert round_coordinate(52.1234567891) == 52.123457
    assert round_coordinate(-13.0000004) == -13.0
