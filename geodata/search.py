"""Spot search: nearest spots a vehicle fits and may park at for a while (API.md "Spot search").

``search`` takes the hits of the spatial index, keeps those the vehicle fits
(vectorised over the hits), then walks them nearest first, deciding
"allowed now" once per distinct rule list (cached on the index by rule list,
start and duration), until ``limit`` results are found. Only the results'
fields are computed per spot; geometry and reasons are built when read.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np
from shapely.geometry import mapping

from geodata.allowed import Decision
from geodata.fit import fit
from geodata.index import SpotIndex
from geodata.model import Spot, Vehicle

_CACHE_MAX = 100_000
_FIRST_BATCH = 4  # times ``limit``: candidates sorted before falling back to a full sort


class SpotResult:
    """One search result with every field of ``GET /v1/spots`` (see :meth:`to_dict`)."""

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
        fitted = fit(self.spot, self._vehicle, self._index.fit_config)
        return [*fitted.reasons, *self.decision.why]

    @property
    def source(self) -> dict[str, str | None]:
        return {"dataset": self.spot.source_dataset, "feature_id": self.spot.source_feature_id}

    def to_dict(self) -> dict[str, Any]:
        """The item as ``GET /v1/spots`` returns it (``allowed_until`` in ISO 8601 with offset)."""
        until = self.allowed_until
        return {
            "id": self.id,
            "geometry": self.geometry,
            "distance_m": round(self.distance_m, 2),
            "kind": self.kind,
            "orientation": self.orientation,
            "length_m": self.length_m,
            "fits": True,
            "spaces_for_vehicle": self.spaces_for_vehicle,
            "allowed_until": None if until is None else until.isoformat(),
            "max_stay_min": self.max_stay_min,
            "fee": self.fee,
            "why": self.why,
            "source": self.source,
        }

    def __repr__(self) -> str:
        return f"SpotResult(id={self.id!r}, distance_m={self.distance_m:.1f}, spaces={self.spaces_for_vehicle})"


def _decide(index: SpotIndex, ruleset_id: int, at: datetime, duration_min: float) -> Decision:
    cache = index.decision_cache
    key = (ruleset_id, at, duration_min)
    found = cache.get(key)
    if found is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        found = cache[key] = index.rulesets[ruleset_id].evaluate(at, duration_min)
    return found


def _spaces(index: SpotIndex, positions: list[int], vehicle_length: float) -> list[int]:
    """spaces_for_vehicle for the chosen spots, vectorised (same formula as :func:`geodata.fit.spaces_for_vehicle`)."""
    pos = np.asarray(positions, dtype=np.int64)
    margin = index.fit_config.manoeuvre_margin_m
    capacity = index.capacity[pos]
    along = np.floor((index.length[pos] + margin) / (vehicle_length + margin) + 1e-9)
    along = np.where(np.isnan(capacity), along, np.minimum(along, capacity))
    spaces = np.where(index.parallel_curb[pos], along, np.where(np.isnan(capacity), 1.0, capacity))
    return spaces.astype(np.int64).tolist()


def search(
    index: SpotIndex,
    lat: float,
    lon: float,
    radius_m: float,
    vehicle: Vehicle,
    at: datetime,
    duration_min: float,
    limit: int = 20,
) -> list[SpotResult]:
    """The ``limit`` nearest spots within ``radius_m`` that ``vehicle`` fits and may park at.

    "May park" means allowed for ``duration_min`` minutes from ``at`` (a naive
    ``at`` is wall-clock time in each spot's dataset zone). Sorted by distance.
    """
    pos, dist = index.within(lat, lon, radius_m)
    n = len(pos)
    if n == 0 or limit <= 0:
        return []
    inf = math.inf
    length = vehicle.length_m
    width = inf if vehicle.width_m is None else vehicle.width_m
    height = inf if vehicle.height_m is None else vehicle.height_m
    weight = inf if vehicle.weight_kg is None else vehicle.weight_kg
    batch = limit * _FIRST_BATCH
    if n > batch:
        head = np.argpartition(dist, batch - 1)[:batch]
        order = head.take(np.argsort(dist.take(head), kind="stable"))
    else:
        order = np.argsort(dist, kind="stable")
    chosen: list[int] = []
    chosen_d: list[float] = []
    decisions: list[Decision] = []
    decided: dict[int, Decision] = {}
    seen = 0
    while True:
        p = pos.take(order)
        # Fit, vectorised over the batch; then "allowed now" per distinct rule list.
        ok = index.max_len.take(p) >= length
        ok &= index.max_width.take(p) >= width
        ok &= index.max_height.take(p) >= height
        ok &= index.max_weight.take(p) >= weight
        ok &= ~index.never.take(p)
        good = np.flatnonzero(ok)
        pg = p.take(good)
        for q, d, rs in zip(pg.tolist(), dist.take(order.take(good)).tolist(), index.ruleset_id.take(pg).tolist()):
            decision = decided.get(rs)
            if decision is None:
                decision = decided[rs] = _decide(index, rs, at, duration_min)
            if decision.allowed:
                chosen.append(q)
                chosen_d.append(d)
                decisions.append(decision)
                if len(chosen) == limit:
                    break
        seen += len(order)
        if len(chosen) == limit or seen >= n:
            break
        # Not enough in the nearest batch: sort the rest and carry on.
        rest = np.ones(n, dtype=bool)
        rest[order] = False
        remaining = np.flatnonzero(rest)
        order = remaining[np.argsort(dist[remaining], kind="stable")]
    spaces = _spaces(index, chosen, length)
    ids, spots = index.ids, index.spots
    return [
        SpotResult(ids[q], spots[q], d, k, decision, vehicle, index)
        for q, d, k, decision in zip(chosen, chosen_d, spaces, decisions)
    ]
