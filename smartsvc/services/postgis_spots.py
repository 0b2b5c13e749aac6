"""Spot search in PostgreSQL + PostGIS: candidates from the GiST-indexed ``geog`` column.

Candidates come nearest first (``ST_DWithin`` on the radius, ordered by the
KNN operator ``<->``) in growing pages; each gets its geodesic distance on
the WGS 84 spheroid from ``ST_Distance`` and the same fit and allowed-now
decision as the in-process index (:class:`geodata.candidates.CandidateJudge`).
Paging stops as soon as ``limit`` spots pass and no spot not yet fetched can
be nearer than them, so the cost follows the spots near the query point.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from geodata.candidates import CandidateJudge
from geodata.fit import DEFAULT_FIT, FitConfig
from geodata.model import Spot, Vehicle
from geodata.search import SpotResult

from ..models import Dataset, LiveLayer
from .layers import public_id
from .spot_query import PARKING, SpotQuery, usable_time_zone

_POINT = "CAST(ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS geography)"
_CANDIDATES = text(
    # The JSON columns as text: most candidates are spots already rebuilt (_spots), whose JSON is not parsed.
    "SELECT seq, CAST(geometry AS text) AS geometry, CAST(properties AS text) AS properties,"
    f" ST_Distance(geog, {_POINT}) AS distance_m, geog <-> {_POINT} AS knn_m"
    " FROM layer_features"
    f" WHERE dataset_id = :dataset_id AND ST_DWithin(geog, {_POINT}, :radius_m)"
    f" ORDER BY geog <-> {_POINT}, seq"
    " LIMIT :page OFFSET :offset"
)
# ``<->`` on geography measures on a sphere, ST_Distance on the spheroid; the
# two differ by well under 1 % (radii of curvature 6335–6400 km against 6371 km).
_SPHERE_SPHEROID_GAP = 0.01
_FIRST_PAGE = 4  # times ``limit``; each further page is twice the last
# Spots rebuilt from their rows, per (dataset, seq): a dataset's features never change once imported (a
# new upload is a new dataset), and searches near the same streets meet the same spots again. Bounded
# (a spot with its geometry is ~1-2 KB); emptied when full.
_SPOTS_MAX = 50_000
_spots: dict[tuple[uuid.UUID, int], Spot] = {}


def _spot(dataset_id: uuid.UUID, row: Any) -> Spot:
    key = (dataset_id, row.seq)
    spot = _spots.get(key)
    if spot is None:
        if len(_spots) >= _SPOTS_MAX:
            _spots.clear()
        spot = _spots[key] = Spot.from_properties(json.loads(row.properties), json.loads(row.geometry))
    return spot


class PostgisSpotFinder:
    """Finds spots with a PostGIS query over the live dataset's features."""

    name = "postgis"

    def __init__(self, layer: str = PARKING, fit_config: FitConfig = DEFAULT_FIT) -> None:
        self.layer = layer
        self.fit_config = fit_config

    def find(self, session: Session, query: SpotQuery, vehicle: Vehicle) -> list[SpotResult]:
        """The nearest spots the vehicle fits and may park at, nearest first."""
        live = session.execute(
            select(LiveLayer.dataset_id, Dataset.time_zone)
            .join(Dataset, Dataset.id == LiveLayer.dataset_id)
            .where(LiveLayer.layer == self.layer)
        ).one_or_none()
        if live is None:
            return []
        dataset_id, zone = live.dataset_id, usable_time_zone(live.dataset_id, live.time_zone)
        judge = CandidateJudge(vehicle, query.at, query.duration_min, timezones={str(dataset_id): zone},
                               default_timezone=zone, fit_config=self.fit_config)
        return _nearest_passing(session, dataset_id, query, judge)


def _nearest_passing(session: Session, dataset_id: uuid.UUID, query: SpotQuery,
                     judge: CandidateJudge) -> list[SpotResult]:
    passing: list[SpotResult] = []
    page, offset = max(query.limit * _FIRST_PAGE, 32), 0
    params = {"lat": query.lat, "lon": query.lon, "dataset_id": dataset_id, "radius_m": query.radius_m}
    while True:
        rows = session.execute(_CANDIDATES, {**params, "page": page, "offset": offset}).all()
        for row in rows:
            spot = _spot(dataset_id, row)
            result = judge.judge(public_id(dataset_id, row.seq), spot, float(row.distance_m))
            if result is not None:
                passing.append(result)
        if len(rows) < page:
            break  # every candidate in the radius has been seen
        # Spots not fetched yet are at least this far on the sphere, so nearly this far on the spheroid.
        settled = float(rows[-1].knn_m) * (1.0 - _SPHERE_SPHEROID_GAP)
        if sum(1 for result in passing if result.distance_m < settled) >= query.limit:
            break
        offset += len(rows)
        page *= 2
    passing.sort(key=lambda result: result.distance_m)
    return passing[: query.limit]
