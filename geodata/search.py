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
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple, overload

import numpy as np
import shapely
from shapely.geometry import mapping

from geodata.allowed import Decision
from geodata.fit import fit
from geodata.index import SpotIndex
from geodata.model import Spot, Vehicle

# Decisions kept per stay (start, duration), by rule list: ~64 stays of at most this many.
_STAY_DECISIONS_MAX = 2048
# Fit reasons kept per (spot, vehicle) on the index (~250 bytes each): the spots searches keep returning.
_REASONS_MAX = 100_000
_POINT, _LINESTRING, _POLYGON = 0, 1, 3  # shapely type ids
_FIRST_BATCH = 4  # times ``limit``: candidates sorted before falling back to a full sort
# Rule-list states per (start, duration): unknown, allowed, not allowed; for this many pairs at most.
_UNKNOWN, _ALLOWED, _REFUSED = 0, 1, 2
_STATES_MAX = 64


class FoundSpots(Sequence["SpotResult"]):
    """What one search found, nearest first, as columns; read as a sequence, its items are
    :class:`SpotResult`\\ s, made when read.

    ``GET /v1/spots`` writes its answer from the columns (:func:`geodata.answer_json.answer_json`):
    making the 20 result objects of a search was ~4 % of a served request's CPU (BENCHMARKS.md, 2).
    """

    __slots__ = ("index", "vehicle", "positions", "distances", "spaces", "decisions")

    def __init__(self, index: SpotIndex, vehicle: Vehicle, positions: list[int], distances: list[float],
                 spaces: list[int], decisions: list[Decision]) -> None:
        self.index = index
        self.vehicle = vehicle
        self.positions = positions  # in the index
        self.distances = distances
        self.spaces = spaces  # spaces_for_vehicle
        self.decisions = decisions

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, i: int) -> SpotResult: ...
    @overload
    def __getitem__(self, i: slice) -> list[SpotResult]: ...

    def __getitem__(self, i: int | slice) -> SpotResult | list[SpotResult]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        q, index = self.positions[i], self.index
        return SpotResult(index.ids[q], index.spots[q], self.distances[i], self.spaces[i], self.decisions[i],
                          self.vehicle, index)

    def results(self) -> SearchResults:
        """Every result, as the list :func:`search` returns."""
        index, vehicle = self.index, self.vehicle
        ids, spots = index.ids, index.spots
        out = SearchResults(self)
        out.extend([SpotResult(ids[q], spots[q], d, k, decision, vehicle, index)
                    for q, d, k, decision in zip(self.positions, self.distances, self.spaces, self.decisions)])
        return out


class SearchResults(list):
    """What :func:`search` returns: its results (a list), and the :class:`FoundSpots` they were made from
    (:func:`geodata.answer_json.answer_json` writes from those)."""

    __slots__ = ("found",)

    def __init__(self, found: FoundSpots) -> None:
        super().__init__()
        self.found = found


class SpotResult:
    """One search result with every field of ``GET /v1/spots`` (see :meth:`to_dict` and :func:`to_dicts`)."""

    __slots__ = ("id", "spot", "distance_m", "spaces_for_vehicle", "decision", "_vehicle", "_index")

    def __init__(
        self, id: str, spot: Spot, distance_m: float, spaces: int, decision: Decision, vehicle: Vehicle, index: SpotIndex
    ) -> None:
        self.id = id
        self.spot = spot
        self.distance_m = distance_m
        self.spaces_for_vehicle = spaces
        self.decision = decision
        self._vehicle = vehicle
        self._index = index

    fits = True  # only fitting spots are returned

    @property
    def geometry(self) -> dict[str, Any]:
        """The spot's geometry as GeoJSON."""
        return mapping(self.spot.geometry)

    @property
    def kind(self) -> str | None:
        return self.spot.kind

    @property
    def orientation(self) -> str | None:
        return self.spot.orientation

    @property
    def length_m(self) -> float | None:
        return self.spot.length_m

    @property
    def allowed_until(self) -> datetime | None:
        return self.decision.allowed_until

    @property
    def max_stay_min(self) -> float | None:
        return self.decision.max_stay_min

    @property
    def fee(self) -> bool:
        return self.decision.fee

    @property
    def why(self) -> list[str]:
        """Reasons in words: the fit first, then the rules over the stay."""
        return [*self._fit_reasons(), *self.decision.why]

    def _fit_reasons(self) -> tuple[str, ...]:
        """Why the vehicle fits, in words; kept per (spot, vehicle) on an index that has a ``fit_reasons`` cache."""
        index = self._index
        cache = getattr(index, "fit_reasons", None)
        if cache is None:
            return tuple(fit(self.spot, self._vehicle, index.fit_config).reasons)
        key = (self.spot, self._vehicle)  # spots hash by identity
        found = cache.get(key)
        if found is None:
            if len(cache) >= _REASONS_MAX:
                cache.clear()
            found = cache[key] = tuple(fit(self.spot, self._vehicle, index.fit_config).reasons)
        return found

    @property
    def source(self) -> dict[str, str | None]:
        return {"dataset": self.spot.source_dataset, "feature_id": self.spot.source_feature_id}

    def to_dict(self) -> dict[str, Any]:
        """The item as ``GET /v1/spots`` returns it (``allowed_until`` in ISO 8601 with offset).

        Numbers are as the response schema dumps them (floats, ``spaces_for_vehicle`` an int), so the
        API can answer with these dicts as they are. The ``why`` list is new; its fit part is shared.
        """
        return self._dict(mapping(self.spot.geometry))

    def _dict(self, geometry: dict[str, Any]) -> dict[str, Any]:
        spot, decision = self.spot, self.decision
        until, stay, length = decision.allowed_until, decision.max_stay_min, spot.length_m
        return {
            "id": self.id,
            "geometry": geometry,
            "distance_m": round(float(self.distance_m), 2),
            "kind": spot.kind,
            "orientation": spot.orientation,
            "length_m": None if length is None else float(length),
            "fits": True,
            "spaces_for_vehicle": self.spaces_for_vehicle,
            "allowed_until": None if until is None else until.isoformat(),
            "max_stay_min": None if stay is None else float(stay),
            "fee": decision.fee,
            "why": [*self._fit_reasons(), *decision.why],
            "source": {"dataset": spot.source_dataset, "feature_id": spot.source_feature_id},
        }

    def __repr__(self) -> str:
        return f"SpotResult(id={self.id!r}, distance_m={self.distance_m:.1f}, spaces={self.spaces_for_vehicle})"


def to_dicts(results: list[SpotResult]) -> list[dict[str, Any]]:
    """What ``[r.to_dict() for r in results]`` gives (as JSON), with all the coordinates read in one go."""
    return [result._dict(geometry) for result, geometry in zip(results, geojson_geometries(results))]


def geojson_geometries(results: list[SpotResult]) -> list[dict[str, Any]]:
    """The results' geometries as GeoJSON dicts (as JSON, what ``mapping`` gives), coordinates read in one go.

    ``shapely.geometry.mapping`` costs ~10 µs a geometry; one ``get_coordinates``
    over the ~20 results of a search costs about as much as one. Points, line
    strings and polygons without holes (what spots are) are built from it, as
    lists where ``mapping`` has tuples; anything else (multi-parts, holes, Z,
    empty) still goes through ``mapping``.
    """
    n = len(results)
    if n == 0:
        return []
    geoms = np.empty(n, dtype=object)
    geoms[:] = [r.spot.geometry for r in results]
    types = shapely.get_type_id(geoms)
    simple = (types == _POINT) | (types == _LINESTRING) | (types == _POLYGON)
    simple &= ~(shapely.has_z(geoms) | shapely.is_empty(geoms))
    if (types == _POLYGON).any():
        simple &= shapely.get_num_interior_rings(geoms) <= 0  # -1 for non-polygons
    picked = np.flatnonzero(simple)
    coords: list[list[float]] = []
    counts: list[int] = []
    if len(picked):
        xy, owner = shapely.get_coordinates(geoms.take(picked), return_index=True)
        coords = xy.tolist()
        counts = np.bincount(owner, minlength=len(picked)).tolist()
    kinds = types.tolist()
    is_simple = simple.tolist()
    out: list[dict[str, Any]] = []
    at = k = 0
    for i, result in enumerate(results):
        if is_simple[i]:
            count = counts[k]
            part = coords[at:at + count]
            at += count
            k += 1
            kind = kinds[i]
            if kind == _POINT:
                out.append({"type": "Point", "coordinates": part[0]})
            elif kind == _LINESTRING:
                out.append({"type": "LineString", "coordinates": part})
            else:
                out.append({"type": "Polygon", "coordinates": [part]})
        else:
            out.append(mapping(result.spot.geometry))
    return out


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
