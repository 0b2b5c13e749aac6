"""Spot search: nearest spots a vehicle fits and may park at for a while (API.md "Spot search").

``search`` asks the index for the hits within the radius that the vehicle
fits and whose rule list is not known to be refused, nearest first — in one
compiled call (:mod:`geodata.kernels`, Numba) or, without it, with NumPy
array operations (:func:`_nearest_allowed_arrays`, the reference). "Allowed
now" is decided once per distinct rule list (cached on the index per stay —
start and duration — by rule list, and as one state per rule list so that a
warm search needs no rule evaluation at all), nearest first, until ``limit``
results are found. Only the results' fields are computed per spot; geometry
and reasons are built when read (:func:`to_dicts` serialises a whole answer,
:mod:`geodata.answer_json` writes it as JSON text; the fit reasons are kept
per spot and vehicle on the index).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import NamedTuple

import numpy as np

from geodata.allowed import Decision
from geodata.index import SpotIndex
from geodata.model import Vehicle
# The result types are geodata.results'; imported from here by most callers.
from geodata.results import FoundSpots, SearchResults, SpotResult, geojson_geometries, to_dicts

__all__ = ["FoundSpots", "SearchResults", "SpotResult", "find_spots", "geojson_geometries", "search", "to_dicts"]

# Decisions kept per stay (start, duration), by rule list: ~64 stays of at most this many.
_STAY_DECISIONS_MAX = 2048
_FIRST_BATCH = 4  # times ``limit``: candidates sorted before falling back to a full sort
# Rule-list states per (start, duration): unknown, allowed, not allowed; for this many pairs at most.
_UNKNOWN, _ALLOWED, _REFUSED = 0, 1, 2
_STATES_MAX = 64


class _Stay(NamedTuple):
    """What is known of the rule lists of an index for one stay (start, duration)."""

    states: np.ndarray  # per rule list: 0 not decided yet, 1 allowed, 2 not; filled as decided
    decisions: dict[int, Decision]  # rule list -> its decision


def _stay(index: SpotIndex, at: datetime, duration_min: float) -> _Stay:
    """The stay's states and decisions, kept in ``index.decision_cache`` for the last few distinct stays only
    (each holds an array as long as the index's rule lists).

    Decisions are looked up by rule list within their stay: a key holding the start compared two equal
    aware datetimes with different ``tzinfo`` objects (each request parses its own) through their UTC
    offsets, ~0.7 µs a lookup, ~20 a search (BENCHMARKS.md, 2).
    """
    stays = index.decision_cache
    key = (at, duration_min)
    found = stays.get(key)
    if found is None:
        if len(stays) >= _STATES_MAX:
            stays.clear()
        found = stays[key] = _Stay(np.zeros(len(index.rulesets), dtype=np.int8), {})
    return found


def _decide(index: SpotIndex, stay: _Stay, ruleset_id: int, at: datetime, duration_min: float) -> Decision:
    decisions = stay.decisions
    found = decisions.get(ruleset_id)
    if found is None:
        if len(decisions) >= _STAY_DECISIONS_MAX:
            decisions.clear()  # the states stay: a decision is the same when made again
        found = decisions[ruleset_id] = index.rulesets[ruleset_id].evaluate(at, duration_min)
    return found


def _decide_unknown(index: SpotIndex, stay: _Stay, rulesets: list[int], need: int, at: datetime,
                    duration_min: float) -> None:
    """Decide the undecided rule lists of hits taken nearest first, until ``need`` of them are allowed."""
    states = stay.states
    allowed = 0
    for rs in rulesets:
        state = states[rs]
        if state == _UNKNOWN:
            state = states[rs] = _ALLOWED if _decide(index, stay, rs, at, duration_min).allowed else _REFUSED
        if state == _ALLOWED:
            allowed += 1
            if allowed == need:
                return


def _spaces(index: SpotIndex, positions: list[int], vehicle_length: float) -> list[int]:
    """spaces_for_vehicle for the chosen spots (same formula as :func:`geodata.fit.spaces_for_vehicle`)."""
    margin = index.fit_config.manoeuvre_margin_m
    parallel = index.parallel_curb.take(positions).tolist()
    spots = index.spots
    out = []
    for q, par in zip(positions, parallel):
        spot = spots[q]
        capacity = spot.capacity
        if par:
            count = math.floor((spot.length_m + margin) / (vehicle_length + margin) + 1e-9)
            out.append(count if capacity is None else min(count, capacity))
        else:
            out.append(1 if capacity is None else capacity)
    return out


def _nearest_allowed_arrays(
    index: SpotIndex, lat: float, lon: float, radius_m: float, need: np.ndarray, stay: _Stay, limit: int,
    at: datetime, duration_min: float,
) -> tuple[list[int], list[float], list[int]]:
    """What :meth:`SpotIndex.nearest_allowed` finds, with NumPy array operations (no Numba; the reference)."""
    pos, dist = index.within(lat, lon, radius_m)
    if len(pos) == 0:
        return [], [], []
    # Fit: every limit of the spot (length -inf where no rule ever allows parking) at least the vehicle's.
    # Four booleans per spot viewed as one uint32: all true is 0x01010101.
    ok = (index.fit_limits.take(pos, axis=0) >= need).view(np.uint32).ravel() == 0x01010101
    fitting = np.flatnonzero(ok)
    n = len(fitting)
    if n == 0:
        return [], [], []
    pos, dist = pos.take(fitting), dist.take(fitting)
    batch = limit * _FIRST_BATCH
    if n > batch:
        head = np.argpartition(dist, batch - 1)[:batch]
        order = head.take(np.argsort(dist.take(head), kind="stable"))
    else:
        order = np.argsort(dist, kind="stable")
    chosen: list[int] = []
    chosen_d: list[float] = []
    chosen_rs: list[int] = []
    states = stay.states
    seen = 0
    while True:
        p = pos.take(order)
        rs = index.ruleset_id.take(p)
        st = states.take(rs)
        if (st == _UNKNOWN).any():
            _decide_unknown(index, stay, rs.tolist(), limit - len(chosen), at, duration_min)
            st = states.take(rs)
        good = np.flatnonzero(st == _ALLOWED)[: limit - len(chosen)]
        chosen.extend(p.take(good).tolist())
        chosen_d.extend(dist.take(order.take(good)).tolist())
        chosen_rs.extend(rs.take(good).tolist())
        seen += len(order)
        if len(chosen) == limit or seen >= n:
            break
        # Not enough in the nearest batch: sort the rest and carry on.
        rest = np.ones(n, dtype=bool)
        rest[order] = False
        remaining = np.flatnonzero(rest)
        order = remaining[np.argsort(dist[remaining], kind="stable")]
    return chosen, chosen_d, chosen_rs


def search(index: SpotIndex, lat: float, lon: float, radius_m: float, vehicle: Vehicle, at: datetime,
           duration_min: float, limit: int = 20) -> list[SpotResult]:
    """The ``limit`` nearest spots within ``radius_m`` that ``vehicle`` fits and may park at.

    "May park" means allowed for ``duration_min`` minutes from ``at`` (a naive
    ``at`` is wall-clock time in each spot's dataset zone). Sorted by distance.
    """
    return find_spots(index, lat, lon, radius_m, vehicle, at, duration_min, limit).results()


def find_spots(
    index: SpotIndex,
    lat: float,
    lon: float,
    radius_m: float,
    vehicle: Vehicle,
    at: datetime,
    duration_min: float,
    limit: int = 20,
) -> FoundSpots:
    """:func:`search`'s results as columns (a sequence of them, made when read)."""
    if limit <= 0 or len(index) == 0:
        return FoundSpots(index, vehicle, [], [], [], [])
    inf = math.inf
    need = np.array([
        vehicle.length_m,
        inf if vehicle.width_m is None else vehicle.width_m,
        inf if vehicle.height_m is None else vehicle.height_m,
        inf if vehicle.weight_kg is None else vehicle.weight_kg,
    ])
    stay = _stay(index, at, duration_min)
    found = index.nearest_allowed(lat, lon, radius_m, need, stay.states, limit)
    spaces: list[int] | None = None
    if found is None:
        chosen, chosen_d, chosen_rs = _nearest_allowed_arrays(index, lat, lon, radius_m, need, stay, limit,
                                                              at, duration_min)
    else:
        pos, d2, rs, spaces, k = found
        if k < 0:  # a rule list not decided for this stay yet: decide nearest first, then pick
            _decide_unknown(index, stay, rs.tolist(), limit, at, duration_min)
            good = np.flatnonzero(stay.states.take(rs) == _ALLOWED)[:limit]
            pos, d2, rs = pos.take(good), d2.take(good), rs.take(good)
            spaces = None
        else:
            pos, d2, rs, spaces = pos[:k], d2[:k], rs[:k], spaces[:k].tolist()
        chosen, chosen_d, chosen_rs = pos.tolist(), np.sqrt(d2).tolist(), rs.tolist()
    if spaces is None:
        spaces = _spaces(index, chosen, vehicle.length_m)
    decided = stay.decisions.get
    decisions = []
    for r in chosen_rs:
        decision = decided(r)
        decisions.append(_decide(index, stay, r, at, duration_min) if decision is None else decision)
    return FoundSpots(index, vehicle, chosen, chosen_d, spaces, decisions)
