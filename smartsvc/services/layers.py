"""Layer features in the database: writing an import's spots, finding a layer's live version, reading it back.

The importer writes with :func:`insert_features`; readers (spot search,
collections, the in-process index) ask :func:`live_layer` which dataset is
live and read its features. On PostgreSQL the same insert fills the
``geog`` geography column (GiST-indexed, not mapped by the ORM) so PostGIS
can answer radius and nearest-first queries.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import shapely
from shapely.geometry import mapping
from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from geodata.model import Spot

from ..models import LayerFeature, LiveLayer

_PG_INSERT = text(
    "INSERT INTO layer_features (dataset_id, seq, feature_index, feature_id, kind, geometry, properties,"
    " min_lon, min_lat, max_lon, max_lat, geog) VALUES (:dataset_id, :seq, :feature_index, :feature_id, :kind,"
    " CAST(:geometry AS jsonb), CAST(:properties AS jsonb), :min_lon, :min_lat, :max_lon, :max_lat,"
    " ST_GeomFromGeoJSON(:geometry)::geography)"
)


def public_id(dataset_id: uuid.UUID | str, seq: int) -> str:
    """The id a feature is served under: its dataset and its position there (``<dataset>.<seq>``)."""
    return f"{dataset_id}.{seq}"


def parse_public_id(value: str) -> tuple[uuid.UUID, int] | None:
    """``(dataset_id, seq)`` from :func:`public_id` output, or None when it is not one."""
    dataset, _, seq = value.rpartition(".")
    try:
        return uuid.UUID(dataset), int(seq)
    except ValueError:
        return None


@dataclass(frozen=True)
class FeatureToStore:
    """One spot of an import, with where it came from in the file."""

    spot: Spot
    feature_index: int


def feature_row(dataset_id: uuid.UUID, seq: int, item: FeatureToStore) -> dict[str, Any]:
    """The column values of one feature (geometry and properties as GeoJSON)."""
    spot = item.spot
    min_lon, min_lat, max_lon, max_lat = shapely.bounds(spot.geometry).tolist()
    return {
        "dataset_id": dataset_id,
        "seq": seq,
        "feature_index": item.feature_index,
        "feature_id": spot.source_feature_id,
        "kind": spot.kind,
        "geometry": mapping(spot.geometry),
        "properties": spot.to_properties(),
        "min_lon": min_lon,
        "min_lat": min_lat,
        "max_lon": max_lon,
        "max_lat": max_lat,
    }


def insert_features(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert feature rows from :func:`feature_row` in one round trip per batch."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            _PG_INSERT,
            [
                {**row, "geometry": json.dumps(row["geometry"]), "properties": json.dumps(row["properties"])}
                for row in rows
            ],
        )
    else:
        session.execute(insert(LayerFeature), list(rows))


@dataclass(frozen=True)
class LiveVersion:
    """The live dataset of a layer and the publish counter that says when it changed."""

    layer: str
    dataset_id: uuid.UUID | None
    version: int


def live_layer(session: Session, layer: str) -> LiveVersion:
    """Which dataset is live for ``layer`` (``dataset_id`` None before the first publish)."""
    row = session.get(LiveLayer, layer)
    if row is None:
        return LiveVersion(layer, None, 0)
    return LiveVersion(layer, row.dataset_id, row.version)


def iter_spots(session: Session, dataset_id: uuid.UUID, batch: int = 10_000) -> Iterator[tuple[str, Spot]]:
    """Every feature of a dataset as ``(public id, Spot)``, in ``seq`` order, read in batches."""
    last = -1
    while True:
        rows = session.execute(
            select(LayerFeature.seq, LayerFeature.geometry, LayerFeature.properties)
            .where(LayerFeature.dataset_id == dataset_id, LayerFeature.seq > last)
            .order_by(LayerFeature.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        for seq, geometry, properties in rows:
            yield public_id(dataset_id, seq), Spot.from_properties(properties, geometry)
        last = rows[-1].seq


def spots_from_rows(rows: Iterable[Any]) -> list[tuple[str, Spot]]:
    """``(public id, Spot)`` from rows carrying ``dataset_id``, ``seq``, ``geometry`` and ``properties``."""
    return [(public_id(r.dataset_id, r.seq), Spot.from_properties(r.properties, r.geometry)) for r in rows]
