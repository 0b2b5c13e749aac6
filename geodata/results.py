"""Spot search results: one result (:class:`SpotResult`), one search's results as columns
(:class:`FoundSpots`) or as a list (:class:`SearchResults`), and their serialisation as the API's dicts
(:func:`to_dicts`, :func:`geojson_geometries`). :mod:`geodata.search` makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, overload

import numpy as np
import shapely
from shapely.geometry import mapping

from geodata.allowed import Decision
from geodata.fit import fit
from geodata.index import SpotIndex
from geodata.model import Spot, Vehicle

# Fit reasons kept per (spot, vehicle) on the index (~250 bytes each): the spots searches keep returning.
_REASONS_MAX = 100_000
_POINT, _LINESTRING, _POLYGON = 0, 1, 3  # shapely type ids


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
        """Every result, as the list :func:`geodata.search.search` returns."""
        index, vehicle = self.index, self.vehicle
        ids, spots = index.ids, index.spots
        out = SearchResults(self)
        out.extend([SpotResult(ids[q], spots[q], d, k, decision, vehicle, index)
                    for q, d, k, decision in zip(self.positions, self.distances, self.spaces, self.decisions)])
        return out


class SearchResults(list):
    """What :func:`geodata.search.search` returns: its results (a list), and the :class:`FoundSpots` they were made from
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
