"""Benchmark 2's city for the service: stored as the live ``parking`` layer, a driver, and the search URLs.

Used by :mod:`bench.bench_http`, :mod:`bench.http_breakdown` and the served tools (:mod:`bench.ab_http`,
:mod:`bench.http_budget`).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlencode

import numpy as np
import shapely
from shapely.geometry import mapping

from bench.citygen import CHUNK, TIMEZONE, VEHICLES, City, query_times
from bench.parallel import ordered_map

RADIUS_M = 300
LIMIT = 20
DURATION_MIN = 60
WARM_DISTINCT_TIMES = 8
# The city is in Berlin and the query week (Mon 2026-11-23) is in winter time.
UTC_OFFSET = "+01:00"


# --------------------------------------------------------------------------- storing the city


def _feature_rows(dataset_id: uuid.UUID, spots: Sequence[Any], start: int,
                  geometry_text: bool = False) -> list[dict[str, Any]]:
    """What :func:`smartsvc.services.layers.feature_row` makes of each spot (source.dataset = the dataset).

    ``geometry_text``: the geometry already as GeoJSON text (GEOS writes a chunk in one call, ~10× faster
    than ``mapping`` + ``json.dumps``; the same coordinates, checked by the smoke test's answers).
    """
    geoms = np.empty(len(spots), dtype=object)
    geoms[:] = [s.geometry for s in spots]
    bounds = shapely.bounds(geoms).tolist()
    geometries = shapely.to_geojson(geoms).tolist() if geometry_text else [mapping(g) for g in geoms]
    ds = str(dataset_id)
    rows = []
    for j, (spot, geometry, (min_lon, min_lat, max_lon, max_lat)) in enumerate(zip(spots, geometries, bounds)):
        props = spot.to_properties()
        props["source"] = {"dataset": ds, "feature_id": spot.source_feature_id}
        rows.append({"dataset_id": dataset_id, "seq": start + j, "feature_index": start + j,
                     "feature_id": spot.source_feature_id, "kind": spot.kind, "geometry": geometry,
                     "properties": props, "min_lon": min_lon, "min_lat": min_lat, "max_lon": max_lon,
                     "max_lat": max_lat})
    return rows


_SQLITE_INSERT = (
    "INSERT INTO layer_features (dataset_id, seq, feature_index, feature_id, kind, geometry, properties,"
    " min_lon, min_lat, max_lon, max_lat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _sqlite_tuples(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``insert_features`` for SQLite as DB-API parameters (rows with GeoJSON text): the same columns."""
    dumps = json.dumps  # what SQLAlchemy's JSON type writes
    return [(r["dataset_id"].hex, r["seq"], r["feature_index"], r["feature_id"], r["kind"], r["geometry"],
             dumps(r["properties"]), r["min_lon"], r["min_lat"], r["max_lon"], r["max_lat"]) for r in rows]


def _chunk_rows(city: City, k: int, dataset_id: uuid.UUID, sqlite: bool) -> tuple[float, int, list[Any]]:
    """Chunk ``k`` of the city as rows (DB-API tuples for SQLite): seconds generating, spots, rows."""
    t = time.perf_counter()
    spots = city.chunk(k)
    generate_s = time.perf_counter() - t
    rows = _feature_rows(dataset_id, spots, k * CHUNK, geometry_text=sqlite)
    return generate_s, len(spots), _sqlite_tuples(rows) if sqlite else rows


def store_city(database: Any, city: City, name: str) -> dict[str, Any]:
    """The city as a published dataset of the ``parking`` layer; seconds spent generating and writing.

    Rows as the importer writes them (``feature_row``); PostgreSQL through
    :func:`smartsvc.services.layers.insert_features` (it fills ``geog``), SQLite
    through one ``executemany`` per chunk. The chunks are generated and turned
    into rows on every core (:func:`bench.parallel.ordered_map`) while this
    process writes them: ``generate_s`` is the generators' time summed over
    the workers, ``store_s`` the wall time of the whole.
    """
    from smartsvc.ids import new_id
    from smartsvc.models import Dataset
    from smartsvc.services.layers import insert_features
    from tests.support.geodata import publish_dataset

    dataset_id = new_id()
    generate_s = 0.0
    t0 = time.perf_counter()
    with database.unit_of_work() as uow:
        session = uow.session
        sqlite = session.get_bind().dialect.name == "sqlite"
        session.add(Dataset(id=dataset_id, name=name, layer="parking", format="geojson", time_zone=TIMEZONE,
                            status="ready", accepted=city.n))
        session.flush()
        seq = 0
        chunks = ((city, k, dataset_id, sqlite) for k in range(city.chunk_count()))
        for seconds, count, rows in ordered_map(_chunk_rows, chunks):
            generate_s += seconds
            if sqlite:
                session.connection().exec_driver_sql(_SQLITE_INSERT, rows)
            else:
                insert_features(session, rows)
            seq += count
        uow.commit()
    publish_dataset(database, dataset_id)
    return {"dataset_id": str(dataset_id), "spots": seq, "generate_s": round(generate_s, 2),
            "store_s": round(time.perf_counter() - t0, 2)}


# --------------------------------------------------------------------------- the service's data


def make_driver(app: Any) -> dict[str, str]:
    """Keys, the smart fortwo in the catalogue, a user owning one, and the user's token (through the API)."""
    from smartsvc.services.keys import create_key

    database = app.extensions["smartsvc"].database
    operator = create_key(database, "operator", "bench operator").plaintext
    app_key = create_key(database, "app", "bench app").plaintext
    client = app.test_client()
    smart = VEHICLES["smart_fortwo"]

    def post(path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 201:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.get_data(as_text=True)[:500]}")
        return response.get_json()

    model = post("/v1/catalog/models", operator, {
        "kind": "car", "brand": "smart", "name": "fortwo",
        "attributes": {"length_m": smart.length_m, "width_m": smart.width_m, "height_m": smart.height_m,
                       "weight_kg": smart.weight_kg}})
    user = post("/v1/users", app_key, {"external_id": "bench-driver", "time_zone": TIMEZONE})
    product = post("/v1/me/products", user["access_token"], {"model_id": model["id"]})
    return {"token": user["access_token"], "product_id": product["id"], "user_id": user["id"]}


def search_paths(city: City, product_id: str, count: int) -> list[str]:
    """``count`` search URLs (paths): query points on streets, 8 distinct start times, as in benchmark 1."""
    points = city.query_points(count)
    times = query_times(count, distinct=WARM_DISTINCT_TIMES)
    paths = []
    for (lat, lon), at in zip(points, times):
        query = {"lat": f"{lat:.7f}", "lon": f"{lon:.7f}", "radius_m": RADIUS_M, "product_id": product_id,
                 "at": at.strftime("%Y-%m-%dT%H:%M:%S") + UTC_OFFSET, "duration_min": DURATION_MIN,
                 "limit": LIMIT}
        paths.append("/v1/spots?" + urlencode(query))
    return paths


def stored_city_for_serving(var_dir: Path, spots: int, name: str, urls: int) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """A city of ``spots`` stored in a fresh SQLite database under ``var_dir``, for servers to serve.

    Returns the service's environment, the driver (:func:`make_driver`) and ``urls`` search paths.
    The in-process app's connections are closed, so that the servers start on a quiet database.
    """
    from bench import http_servers

    city = City(spots)
    env = http_servers.service_env(var_dir)
    app = http_servers.in_process_app(env)
    store_city(app.extensions["smartsvc"].database, city, name)
    driver = make_driver(app)
    app.extensions["smartsvc"].database.engine.dispose()
    return env, driver, search_paths(city, driver["product_id"], urls)
