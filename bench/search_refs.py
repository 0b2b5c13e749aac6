"""Benchmark 1's references beside our search: the same spots and queries without our index.

:class:`NaiveScan` (NumPy, no index, the same formula and filters as ours), :func:`geopy_search` (geopy
and ``fit`` per row) and :class:`PostGISReference` (the spots in a GiST-indexed table, queried with a
prepared statement, with the server's own execution time and plan).
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import numpy as np
import shapely

from bench.common import Context
from geodata import SpotIndex
from geodata.fit import DEFAULT_FIT, max_length_m
from geodata.geo import segment_distance2
from geodata.model import Vehicle

# The query every search here answers, ours and the references alike.
RADIUS_M = 300.0
LIMIT = 20


class NaiveScan:
    """What search costs without a spatial index: distances to every spot, then filter and sort.

    Uses the same geodesic formula as the index (geodata.geo) and the same fit
    limits and rule evaluation, so the answers can be compared to ours.
    """

    def __init__(self, index: SpotIndex) -> None:
        spots = index.spots
        self.index = index
        geoms = np.array([s.geometry for s in spots], dtype=object)
        parts, owner = shapely.get_parts(geoms, return_index=True)
        poly = shapely.get_type_id(parts) == 3
        rings, ring_of = shapely.get_rings(parts[poly], return_index=True)
        pieces = np.concatenate([parts[~poly], rings])
        piece_owner = np.concatenate([owner[~poly], owner[poly][ring_of]])
        xy, piece_of = shapely.get_coordinates(pieces, return_index=True)
        is_point = (shapely.get_type_id(pieces) == 0)[piece_of]
        a = np.concatenate([np.flatnonzero(piece_of[1:] == piece_of[:-1]), np.flatnonzero(is_point)])
        seg_owner = piece_owner[piece_of[a]]
        b = np.where(is_point[a], a, a + 1)
        order = np.argsort(seg_owner, kind="stable")
        a, b, seg_owner = a[order], b[order], seg_owner[order]
        self.segments = np.vstack([xy[a, 1], xy[a, 0], xy[b, 1], xy[b, 0]])
        counts = np.bincount(seg_owner, minlength=len(spots))
        self.seg_first = np.cumsum(counts) - counts
        kinds = shapely.get_type_id(geoms)
        self.polygons = np.flatnonzero(kinds == 3)
        self.polygon_geoms = geoms[self.polygons]
        inf = math.inf
        self.max_len = np.array([max_length_m(s, DEFAULT_FIT) for s in spots])
        self.max_width = np.array([inf if s.max_vehicle_width_m is None else s.max_vehicle_width_m for s in spots])
        self.max_height = np.array([inf if s.max_vehicle_height_m is None else s.max_vehicle_height_m for s in spots])
        self.max_weight = np.array([inf if s.max_vehicle_weight_kg is None else s.max_vehicle_weight_kg
                                    for s in spots])
        self.ruleset_id = np.asarray(index.ruleset_id)
        self.allowed_cache: dict[Any, np.ndarray] = {}

    def allowed(self, at: datetime, duration_min: float) -> np.ndarray:
        key = (at, duration_min)
        found = self.allowed_cache.get(key)
        if found is None:
            found = self.allowed_cache[key] = np.array(
                [rs.evaluate(at, duration_min).allowed for rs in self.index.rulesets], dtype=bool)
        return found

    def search(self, lat: float, lon: float, radius_m: float, vehicle: Vehicle, at: datetime,
               duration_min: float, limit: int) -> list[tuple[str, float]]:
        """(id, distance in metres) of the ``limit`` nearest fitting, allowed spots."""
        d2 = np.minimum.reduceat(segment_distance2(lat, lon, self.segments), self.seg_first)
        if len(self.polygons):
            d2[self.polygons[shapely.contains_xy(self.polygon_geoms, lon, lat)]] = 0.0
        ok = d2 <= radius_m * radius_m
        ok &= self.max_len >= vehicle.length_m
        ok &= self.max_width >= (vehicle.width_m or math.inf)
        ok &= self.max_height >= (vehicle.height_m or math.inf)
        ok &= self.max_weight >= (vehicle.weight_kg or math.inf)
        ok &= self.allowed(at, duration_min)[self.ruleset_id]
        found = np.flatnonzero(ok)
        top = found[np.argsort(d2[found], kind="stable")[:limit]]
        ids = self.index.ids
        return [(ids[i], math.sqrt(d)) for i, d in zip(top.tolist(), d2[top].tolist())]


def geopy_search(index: SpotIndex, lat: float, lon: float, radius_m: float, vehicle: Vehicle, at: datetime,
                 duration_min: float, limit: int) -> list[str]:
    """The textbook version: geopy per row (to each vertex), fit per row, rules per distinct list."""
    from geopy.distance import geodesic

    from geodata.fit import fit

    here = (lat, lon)
    decided: dict[int, bool] = {}
    found = []
    for pos, spot in enumerate(index.spots):
        coords = shapely.get_coordinates(spot.geometry)
        d = min(geodesic(here, (y, x)).meters for x, y in coords)
        if d > radius_m or not fit(spot, vehicle).fits:
            continue
        rs = int(index.ruleset_id[pos])
        if rs not in decided:
            decided[rs] = index.rulesets[rs].evaluate(at, duration_min).allowed
        if decided[rs]:
            found.append((d, index.ids[pos]))
    found.sort()
    return [i for _, i in found[:limit]]


class PostGISReference:
    """The same spots in PostGIS: geography + GiST, the query a user would write instead of adopting us."""

    QUERY = """
        SELECT id, ST_Distance(geog, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography) AS distance_m
        FROM {table}
        WHERE ST_DWithin(geog, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography, %(radius)s)
          AND max_len >= %(length)s AND max_width >= %(width)s
          AND max_height >= %(height)s AND max_weight >= %(weight)s
          AND ruleset_id = ANY(%(allowed)s)
        ORDER BY geog <-> ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography
        LIMIT %(limit)s
    """

    def __init__(self, ctx: Context, index: SpotIndex) -> None:
        self.pg = ctx.postgres()
        self.table = f"spots_{len(index)}"
        self.conn = self.pg.connect()
        self.load_s, self.index_s = self._load(index)
        self.sql = self.QUERY.format(table=self.table)

    def _load(self, index: SpotIndex) -> tuple[float, float]:
        conn = self.conn
        conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        conn.execute(f"""CREATE UNLOGGED TABLE {self.table} (
            id text PRIMARY KEY, geog geography(Geometry, 4326) NOT NULL,
            max_len float8 NOT NULL, max_width float8 NOT NULL, max_height float8 NOT NULL,
            max_weight float8 NOT NULL, ruleset_id int NOT NULL)""")
        t0 = time.perf_counter()
        n = len(index)
        step = 100_000

        def num(a: np.ndarray) -> list[str]:
            return ["Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(v) for v in a.tolist()]

        with conn.cursor() as cur, cur.copy(
            f"COPY {self.table} (id, geog, max_len, max_width, max_height, max_weight, ruleset_id) FROM STDIN"
        ) as copy:
            for lo in range(0, n, step):
                hi = min(lo + step, n)
                wkb = shapely.to_wkb(np.array([s.geometry for s in index.spots[lo:hi]], dtype=object), hex=True)
                cols = [index.ids[lo:hi], wkb.tolist(), num(index.max_len[lo:hi]), num(index.max_width[lo:hi]),
                        num(index.max_height[lo:hi]), num(index.max_weight[lo:hi]),
                        [str(v) for v in index.ruleset_id[lo:hi].tolist()]]
                copy.write("".join("\t".join(row) + "\n" for row in zip(*cols)))
        t1 = time.perf_counter()
        conn.execute(f"CREATE INDEX ON {self.table} USING gist (geog)")
        conn.execute(f"ANALYZE {self.table}")
        return t1 - t0, time.perf_counter() - t1

    def params(self, lat: float, lon: float, vehicle: Vehicle, allowed: list[int]) -> dict[str, Any]:
        return {"lat": lat, "lon": lon, "radius": RADIUS_M, "length": vehicle.length_m,
                "width": vehicle.width_m or math.inf, "height": vehicle.height_m or math.inf,
                "weight": vehicle.weight_kg or math.inf, "allowed": allowed, "limit": LIMIT}

    def query(self, params: dict[str, Any]) -> list[tuple[str, float]]:
        with self.conn.cursor() as cur:
            cur.execute(self.sql, params, prepare=True)
            return cur.fetchall()

    def _prepare_for_explain(self) -> None:
        """The same query as a named server-side prepared statement, to EXPLAIN what the prepared query runs."""
        import re

        names = ["lon", "lat", "radius", "length", "width", "height", "weight", "allowed", "limit"]
        types = ["float8"] * 7 + ["int[]", "int"]
        sql = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", self.sql)
        self.conn.execute(f"PREPARE bench_q({', '.join(types)}) AS {sql}")
        self._names = names
        self._prepared = True

    def _execute_sql(self, params: dict[str, Any]) -> str:
        from psycopg import sql

        args = sql.SQL(", ").join(sql.Literal(params[name]) for name in self._names)
        return sql.SQL("EXECUTE bench_q({})").format(args).as_string(self.conn)

    def explain_ms(self, params: dict[str, Any]) -> float:
        """Server-side execution time of the prepared query (EXPLAIN ANALYZE EXECUTE, per-node timing off)."""
        if not getattr(self, "_prepared", False):
            self._prepare_for_explain()
            for _ in range(6):  # past the 5 custom plans, as the client's prepared statement is
                self.conn.execute(self._execute_sql(params))
        row = self.conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + self._execute_sql(params)).fetchone()
        return float(row[0][0]["Execution Time"])

    def plan(self, params: dict[str, Any]) -> str:
        """The plan of the prepared query, as text."""
        if not getattr(self, "_prepared", False):
            self._prepare_for_explain()
        return "\n".join(r[0] for r in self.conn.execute("EXPLAIN " + self._execute_sql(params)).fetchall())

    def close(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        self.conn.close()
