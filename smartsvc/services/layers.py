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

import numpy as np
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry
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


#: What :func:`insert_feature_values` writes for each feature, in the order of its tuples (``dataset_id`` is
#: given once per batch): ``geometry`` and ``properties`` are JSON text, serialised once by the caller.
VALUE_COLUMNS = ("seq", "feature_index", "feature_id", "kind", "geometry", "properties",
                 "min_lon", "min_lat", "max_lon", "max_lat")
_SQLITE_INSERT = (f"INSERT INTO layer_features (dataset_id, {', '.join(VALUE_COLUMNS)}) "
                  f"VALUES (?, {', '.join('?' * len(VALUE_COLUMNS))})")
# PostgreSQL: COPY, with ``geog`` given as hex WKB of the same geometry (the geography
# ST_GeomFromGeoJSON(geometry)::geography makes of its GeoJSON, without parsing it again).
_PG_COPY = f"COPY layer_features (dataset_id, {', '.join(VALUE_COLUMNS)}, geog) FROM STDIN"
# The page cache of a SQLite connection while it writes a batch (KiB): a batch's index pages stay
# in memory until its commit. Back to the default when the connection returns to the pool.
SQLITE_BULK_CACHE_KIB = 64 * 1024
_FAST_TYPES = {0: "Point", 1: "LineString", 3: "Polygon"}  # shapely type ids


def _json_encoder(allow_nan: bool) -> Any:
    """``json.dumps`` with its default options, minus the per-call set-up (the C encoder, made once)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        encoder = json.JSONEncoder(allow_nan=allow_nan)
        return encoder.encode
    encode = make(None, None, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, allow_nan)
    join = "".join

    def dumps(value: Any) -> str:
        return join(encode(value, 0))

    return dumps


#: Exactly ``json.dumps(value)`` for dicts and lists (and ``allow_nan=False``'s ValueError for the strict one).
dumps_json = _json_encoder(True)
dumps_json_strict = _json_encoder(False)


def geometry_values(geometries: Sequence[BaseGeometry]) -> list[tuple[str, float, float, float, float]]:
    """``(GeoJSON text, min_lon, min_lat, max_lon, max_lat)`` of each geometry, computed for the batch at once.

    The text is exactly ``json.dumps(mapping(geometry))`` (what :func:`feature_row` stores), written
    from one vectorised ``get_coordinates`` for 2-D points, lines and polygons (``json`` writes a float
    as its ``repr``); anything else, or a batch with a non-finite coordinate, goes through ``mapping``.
    """
    if not geometries:
        return []
    geoms = np.empty(len(geometries), dtype=object)
    geoms[:] = geometries
    bounds = shapely.bounds(geoms).tolist()
    types = shapely.get_type_id(geoms).tolist()
    counts = shapely.get_num_coordinates(geoms).tolist()
    has_z = shapely.has_z(geoms).tolist()
    coords = shapely.get_coordinates(geoms)
    if not np.isfinite(coords).all():
        return [(json.dumps(mapping(g)), *box) for g, box in zip(geometries, bounds)]
    positions = [f"[{x!r}, {y!r}]" for x, y in coords.tolist()]
    ring_counts: list[int] = []
    ring_sizes: list[int] = []
    if 3 in types:
        polygons = geoms[np.asarray(types) == 3]
        ring_counts = (shapely.get_num_interior_rings(polygons) + 1).tolist()
        ring_sizes = shapely.get_num_coordinates(shapely.get_rings(polygons)).tolist()
    join = ", ".join
    out = []
    start = polygon = ring = 0
    for geometry, kind, count, z, box in zip(geometries, types, counts, has_z, bounds):
        end = start + count
        if z or count == 0 or kind not in _FAST_TYPES:
            text = json.dumps(mapping(geometry))
        elif kind == 0:
            text = '{"type": "Point", "coordinates": ' + positions[start] + "}"
        elif kind == 1:
            text = '{"type": "LineString", "coordinates": [' + join(positions[start:end]) + "]}"
        else:
            rings = []
            at = start
            for size in ring_sizes[ring:ring + ring_counts[polygon]]:
                rings.append("[" + join(positions[at:at + size]) + "]")
                at += size
            text = '{"type": "Polygon", "coordinates": [' + join(rings) + "]}"
        if kind == 3:
            ring += ring_counts[polygon]
            polygon += 1
        start = end
        out.append((text, *box))
    return out


def insert_feature_values(session: Session, dataset_id: uuid.UUID, rows: Sequence[tuple[Any, ...]],
                          geometries: Sequence[BaseGeometry]) -> None:
    """Insert rows of :data:`VALUE_COLUMNS` (JSON already serialised) for one dataset, in this transaction.

    The importer's write path, without per-row type processing: SQLite gets
    one ``executemany`` through the DBAPI (with a bigger page cache for the
    transaction); PostgreSQL a ``COPY``, ``geog`` from ``geometries`` (the
    rows' shapely geometries, in the same order) as WKB.
    """
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        geoms = np.empty(len(geometries), dtype=object)
        geoms[:] = geometries
        wkb = shapely.to_wkb(geoms, hex=True).tolist()
        driver = connection.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(_PG_COPY) as copy:
            write_row = copy.write_row
            for row, geog in zip(rows, wkb):
                write_row((dataset_id, *row, geog))
    else:
        info = connection.connection.info  # kept with the DBAPI connection while it is pooled
        if "sqlite_cache_size" not in info:  # smartsvc.db puts it back when the connection is checked in
            info["sqlite_cache_size"] = connection.exec_driver_sql("PRAGMA cache_size").scalar()
            connection.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_BULK_CACHE_KIB}")
        key = dataset_id.hex  # how SQLAlchemy's Uuid type stores it on SQLite
        connection.exec_driver_sql(_SQLITE_INSERT, [(key, *row) for row in rows])


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


# Read on every spot search (is the in-process index current?): plain SQL with typed columns costs about
# half of an ORM ``session.get`` (no identity map, no statement cache key to build).
_LIVE_VERSION = text("SELECT dataset_id, version FROM live_layers WHERE layer = :layer").columns(
    LiveLayer.dataset_id, LiveLayer.version)


def live_layer(session: Session, layer: str) -> LiveVersion:
    """Which dataset is live for ``layer`` (``dataset_id`` None before the first publish)."""
    row = session.execute(_LIVE_VERSION, {"layer": layer}).first()
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
