"""Pure derivations of a user's context: speed from fixes, distance and ETA to a trip's destination.

No database here: the ingest use case and the facts builder hand in the
stored parts (plain dicts, times as ISO 8601 strings) and get numbers back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from geodata.geo import distance_m

# Below this the user is not moving towards anything: no ETA (a parked phone's GPS drifts at ~0.1–0.3 m/s).
MIN_MOVING_SPEED_MPS = 0.5
# Two fixes further apart than this say little about the speed now.
MAX_SPEED_SPAN_S = 300.0
# Nor do two fixes closer than this (the distance is mostly GPS noise).
MIN_SPEED_SPAN_S = 1.0
# Faster than any product on a road: a jump of the position, not a speed.
MAX_PLAUSIBLE_SPEED_MPS = 100.0
COORDINATE_DIGITS = 6


def round_coordinate(value: float) -> float:
    """A latitude or longitude rounded to 6 decimals (~0.1 m): what is stored and compared."""
    return round(float(value), COORDINATE_DIGITS)


def parse_time(value: Any) -> datetime | None:
    """A stored ISO 8601 time back as an aware datetime (None stays None)."""
    if value is None:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def speed_between(previous: Mapping[str, Any] | None, lat: float, lon: float, at: datetime) -> float | None:
    """The speed (m/s) implied by moving from the ``previous`` fix to (lat, lon) at ``at``; None when unknowable.

    Unknowable: no previous fix, fixes too close or too far apart in time, or
    a jump no vehicle makes.
    """
    if not previous:
        return None
    previous_at = parse_time(previous.get("at"))
    if previous_at is None:
        return None
    span = (at - previous_at).total_seconds()
    if not MIN_SPEED_SPAN_S <= span <= MAX_SPEED_SPAN_S:
        return None
    speed = distance_m(float(previous["lat"]), float(previous["lon"]), lat, lon) / span
    if not math.isfinite(speed) or speed > MAX_PLAUSIBLE_SPEED_MPS:
        return None
    return speed


def fix_speed(reported: float | None, previous: Mapping[str, Any] | None, lat: float, lon: float,
              at: datetime) -> float | None:
    """The user's speed at a new fix: the phone's own ``speed_mps`` when it reported one, else from the last fix."""
    if reported is not None:
        return float(reported)
    return speed_between(previous, lat, lon, at)


def distance_to(fix: Mapping[str, Any] | None, destination: Mapping[str, Any] | None) -> float | None:
    """Geodesic metres from a fix to a destination {lat, lon}; None when either is unknown."""
    if not fix or not destination:
        return None
    return distance_m(float(fix["lat"]), float(fix["lon"]), float(destination["lat"]), float(destination["lon"]))


def eta_seconds(distance: float | None, speed_mps: float | None, activity: str | None) -> float | None:
    """Seconds to cover ``distance`` at the recent speed; None when the user is still or the speed is unknown."""
    if distance is None or speed_mps is None or activity == "still":
        return None
    if not math.isfinite(speed_mps) or speed_mps < MIN_MOVING_SPEED_MPS:
        return None
    return distance / speed_mps


@dataclass(frozen=True)
class TripProgress:
    """Where the user stands on the active trip: metres and seconds (ETA) to go, and when they would arrive."""

    distance_m: float | None
    eta_s: float | None
    eta: datetime | None


def trip_progress(trip: Mapping[str, Any] | None, fix: Mapping[str, Any] | None, speed_mps: float | None,
                  activity: Mapping[str, Any] | None) -> TripProgress | None:
    """The progress of ``trip`` measured at the last ``fix`` (None without an active trip).

    The ETA counts from the fix's time: the distance was measured then.
    """
    if not trip:
        return None
    distance = distance_to(fix, trip.get("destination"))
    activity_value = activity.get("value") if activity else None
    eta_s = eta_seconds(distance, speed_mps, activity_value)
    fix_at = parse_time(fix.get("at")) if fix else None
    eta = fix_at + timedelta(seconds=eta_s) if eta_s is not None and fix_at is not None else None
    return TripProgress(distance, eta_s, eta)


def approaching_reached(trigger: Mapping[str, Any], distance: float | None, eta_s: float | None) -> bool:
    """Whether a ``trip.approaching`` rule's own threshold (``within_m`` and/or ``within_s``) is reached."""
    within_m, within_s = trigger.get("within_m"), trigger.get("within_s")
    if within_m is not None and distance is not None and distance <= float(within_m):
        return True
    return within_s is not None and eta_s is not None and eta_s <= float(within_s)
