"""Does a vehicle fit a spot, and how many of it (GEODATA.md "Fit").

:func:`fit` answers for one spot with reasons in words; :func:`max_length_m`
and :func:`spaces_for_vehicle` give the same answer in the form the spatial
index vectorises (both derive from :func:`_geometric`, so they cannot drift).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from geodata.model import Spot, Vehicle

PARALLEL = "parallel"  # L + margin ≤ length
BAY = "bay"  # perpendicular/diagonal without a marked length: L ≤ bay depth
MARKED = "marked"  # a marked space length: L ≤ length
LIMITS_ONLY = "limits"  # lot, charger, unmarked space: legal limits alone
UNKNOWN = "unknown"  # a parallel curb of unknown length: cannot tell, so no


@dataclass(frozen=True, slots=True)
class FitConfig:
    """Tunable constants of the fit rule."""

    manoeuvre_margin_m: float = 1.0
    bay_depth_m: float = 5.0


DEFAULT_FIT = FitConfig()


@dataclass(frozen=True, slots=True)
class FitResult:
    """The answer for one vehicle and one spot."""

    fits: bool
    spaces_for_vehicle: int
    reasons: tuple[str, ...]


def _m(value: float) -> str:
    return f"{round(value, 2):g} m"


def _geometric(spot: Spot, config: FitConfig) -> tuple[str, float]:
    """Which geometric rule applies and the longest vehicle it admits."""
    kind, orientation, length = spot.kind, spot.orientation, spot.length_m
    if kind in ("lot", "charger"):
        return LIMITS_ONLY, math.inf
    if orientation in ("perpendicular", "diagonal"):
        if kind == "space" and length is not None:
            return MARKED, length
        return BAY, config.bay_depth_m
    if kind == "space" and orientation is None:
        return (LIMITS_ONLY, math.inf) if length is None else (MARKED, length)
    if kind is None and orientation is None and spot.geometry.geom_type != "LineString":
        return LIMITS_ONLY, math.inf
    # A parallel spot, or a curb with no orientation.
    if length is None:
        return UNKNOWN, -math.inf
    return PARALLEL, length - config.manoeuvre_margin_m


def is_parallel_curb(spot: Spot, config: FitConfig = DEFAULT_FIT) -> bool:
    """True where the number of vehicles depends on their length (a parallel curb)."""
    return spot.kind in ("curb", None) and _geometric(spot, config)[0] == PARALLEL


def max_length_m(spot: Spot, config: FitConfig = DEFAULT_FIT) -> float:
    """The longest vehicle that fits, geometry and legal length limit together.

    ``inf`` when length does not matter; ``-inf`` when nothing fits (unknown
    curb length, capacity 0).
    """
    if spot.capacity == 0:
        return -math.inf
    longest = _geometric(spot, config)[1]
    if spot.max_vehicle_length_m is not None:
        longest = min(longest, spot.max_vehicle_length_m)
    return longest


def spaces_for_vehicle(spot: Spot, vehicle_length_m: float, config: FitConfig = DEFAULT_FIT) -> int:
    """How many such vehicles the spot holds (assuming it fits)."""
    if is_parallel_curb(spot, config):
        margin = config.manoeuvre_margin_m
        count = math.floor((spot.length_m + margin) / (vehicle_length_m + margin) + 1e-9)
        return count if spot.capacity is None else min(count, spot.capacity)
    return 1 if spot.capacity is None else spot.capacity


def _legal(spot: Spot, vehicle: Vehicle) -> list[tuple[bool, str]]:
    checks = (
        ("length", spot.max_vehicle_length_m, vehicle.length_m, _m),
        ("width", spot.max_vehicle_width_m, vehicle.width_m, _m),
        ("height", spot.max_vehicle_height_m, vehicle.height_m, _m),
        ("weight", spot.max_vehicle_weight_kg, vehicle.weight_kg, lambda kg: f"{kg:,.0f} kg"),
    )
    out = []
    for what, limit, value, fmt in checks:
        if limit is None:
            continue
        if value is None:
            out.append((False, f"the {what} limit is {fmt(limit)} and the vehicle's {what} is unknown"))
        elif value > limit:
            out.append((False, f"{what} {fmt(value)} is over the {fmt(limit)} limit"))
        else:
            out.append((True, f"{what} {fmt(value)} is within the {fmt(limit)} limit"))
    return out


def fit(spot: Spot, vehicle: Vehicle, config: FitConfig = DEFAULT_FIT) -> FitResult:
    """Whether ``vehicle`` fits ``spot``, how many of it, and why, per GEODATA.md."""
    mode, longest = _geometric(spot, config)
    length, margin = vehicle.length_m, config.manoeuvre_margin_m
    what = spot.kind or "spot"
    if mode == PARALLEL:
        geometric_ok = length <= longest + 1e-9
        if geometric_ok:
            n = spaces_for_vehicle(spot, length, config)
            plural = "car" if n == 1 else "cars"
            reason = (
                f"{_m(spot.length_m)} {what} holds {n} {plural} of {_m(length)} (needs {_m(length + margin)} each)"
            )
        else:
            reason = f"{_m(spot.length_m)} {what} is too short for a {_m(length)} car (needs {_m(length + margin)})"
    elif mode == BAY:
        geometric_ok = length <= longest + 1e-9
        verb = "fits" if geometric_ok else "does not fit"
        reason = f"a {_m(length)} car {verb} a {spot.orientation} bay ({_m(longest)} deep)"
    elif mode == MARKED:
        geometric_ok = length <= longest + 1e-9
        verb = "fits" if geometric_ok else "does not fit"
        reason = f"a {_m(length)} car {verb} the marked {_m(longest)} space"
    elif mode == UNKNOWN:
        geometric_ok = False
        reason = f"the length of this {what} is unknown, so no vehicle can be sent there"
    else:
        geometric_ok = True
        reason = f"{what}: only legal limits apply"
    reasons = [reason]
    legal = _legal(spot, vehicle)
    reasons.extend(text for _, text in legal)
    fits = geometric_ok and all(ok for ok, _ in legal)
    if fits and spot.capacity == 0:
        fits = False
        reasons.append("its capacity is 0")
    spaces = spaces_for_vehicle(spot, length, config) if fits else 0
    return FitResult(fits, spaces, tuple(reasons))
