"""The live version of each layer as a feature collection (OGC API Features style).

Readers only ever see the dataset ``live_layers`` points at. Items are paged
by their position in that dataset (``seq``); a cursor names the dataset it
pages through, so a publish between two pages is noticed instead of mixing
two versions. A ``bbox`` selects the features whose geometry intersects the
box: the stored feature bounds narrow the rows, shapely decides exactly.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import shapely
from shapely.geometry import box, shape
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from ..db import Database
from ..errors import Conflict
from ..models import LAYERS, Dataset, LayerFeature
from .layers import live_layer, public_id

BBox = tuple[float, float, float, float]  # west, south, east, north (west > east crosses the antimeridian)


@dataclass(frozen=True)
class LiveDataset:
    """The dataset that is the live version of a layer."""

    id: uuid.UUID
    name: str
    time_zone: str | None
    published_at: datetime | None


@dataclass(frozen=True)
class Extent:
    """How many features a dataset has and the box around them (None when it has none)."""

    feature_count: int
    bbox: BBox | None


@dataclass(frozen=True)
class Collection:
    """One layer: its live dataset, publish counter and extent."""

    layer: str
    dataset: LiveDataset | None
    version: int
    extent: Extent


@dataclass(frozen=True)
class Feature:
    """One feature of a live dataset, as stored (normalized properties)."""

    id: str
    geometry: dict[str, Any]
    properties: dict[str, Any]


@dataclass(frozen=True)
class FeaturePage:
    """One page of a layer's features and where the next one starts (None on the last page)."""

    layer: str
    dataset_id: uuid.UUID | None
    features: list[Feature]
    next_after: tuple[uuid.UUID, int] | None


class DatasetExtents:
    """Feature count and bounds per dataset, computed once each.

    A dataset's features never change once it is imported, so the answer
    for a live dataset can be kept; only a few datasets are ever live.
    """

    _MAX_KEPT = 64

    def __init__(self) -> None:
        self._known: dict[uuid.UUID, Extent] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, dataset_id: uuid.UUID) -> Extent:
        """The extent of ``dataset_id`` (one aggregate query the first time)."""
        known = self._known.get(dataset_id)
        if known is not None:
            return known
        row = session.execute(
            select(func.count(), func.min(LayerFeature.min_lon), func.min(LayerFeature.min_lat),
                   func.max(LayerFeature.max_lon), func.max(LayerFeature.max_lat))
            .where(LayerFeature.dataset_id == dataset_id)
        ).one()
        count, *bounds = row
        extent = Extent(int(count), None if not count else tuple(float(b) for b in bounds))  # type: ignore[arg-type]
        with self._lock:
            if len(self._known) >= self._MAX_KEPT:
                self._known.clear()
            self._known[dataset_id] = extent
        return extent


def _collection(session: Session, layer: str, extents: DatasetExtents) -> Collection:
    live = live_layer(session, layer)
    dataset = session.get(Dataset, live.dataset_id) if live.dataset_id is not None else None
    if dataset is None:
        return Collection(layer, None, live.version, Extent(0, None))
    return Collection(
        layer,
        LiveDataset(dataset.id, dataset.name, dataset.time_zone, dataset.published_at),
        live.version,
        extents.get(session, dataset.id),
    )


def list_collections(database: Database, extents: DatasetExtents) -> list[Collection]:
    """Every layer, with its live dataset (or none yet)."""
    with database.session() as session:
        return [_collection(session, layer, extents) for layer in LAYERS]


def get_collection(database: Database, extents: DatasetExtents, layer: str) -> Collection:
    """One layer (``layer`` is one of :data:`LAYERS`; the route guarantees it)."""
    with database.session() as session:
        return _collection(session, layer, extents)


def _bbox_filter(query: Select[Any], bbox: BBox) -> Select[Any]:
    west, south, east, north = bbox
    query = query.where(LayerFeature.min_lat <= north, LayerFeature.max_lat >= south)
    if west <= east:
        return query.where(and_(LayerFeature.min_lon <= east, LayerFeature.max_lon >= west))
    return query.where(or_(LayerFeature.max_lon >= west, LayerFeature.min_lon <= east))


def _boxes(bbox: BBox) -> Any:
    west, south, east, north = bbox
    if west <= east:
        return box(west, south, east, north)
    return shapely.union(box(west, south, 180.0, north), box(-180.0, south, east, north))


def list_features(
    database: Database, layer: str, *, bbox: BBox | None, limit: int, after: tuple[uuid.UUID, int] | None
) -> FeaturePage:
    """Up to ``limit`` features of the layer's live version (in ``bbox`` when given), in dataset order.

    ``after`` is ``(dataset id, seq)`` of the last feature of the previous
    page; it must name the live dataset (409 naming ``cursor`` otherwise).
    """
    with database.session() as session:
        live = live_layer(session, layer)
        if after is not None and after[0] != live.dataset_id:
            message = (f"the '{layer}' layer has been published again since this cursor was issued; "
                       "start again without a cursor")
            raise Conflict(f"cursor: {message}", errors={"cursor": [message]})
        if live.dataset_id is None:
            return FeaturePage(layer, None, [], None)
        query = select(LayerFeature.seq, LayerFeature.geometry, LayerFeature.properties).where(
            LayerFeature.dataset_id == live.dataset_id)
        if bbox is not None:
            query = _bbox_filter(query, bbox)
        area = None if bbox is None else _boxes(bbox)
        found = []
        last = -1 if after is None else after[1]
        while len(found) <= limit:
            rows = session.execute(query.where(LayerFeature.seq > last).order_by(LayerFeature.seq)
                                   .limit(limit + 1)).all()
            for row in rows:
                if area is None or shapely.intersects(area, shape(row.geometry)):
                    found.append(row)
                    if len(found) > limit:
                        break
            if len(rows) <= limit:
                break
            last = rows[-1].seq
    dataset_id = live.dataset_id
    features = [Feature(public_id(dataset_id, r.seq), r.geometry, r.properties) for r in found[:limit]]
    next_after = (dataset_id, found[limit - 1].seq) if len(found) > limit else None
    return FeaturePage(layer, dataset_id, features, next_after)
