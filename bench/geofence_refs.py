"""Benchmark 3's references beside our index, run on the same fences and points and checked against our answers.

The other design (:class:`StrtreeEvaluator`, timed by :func:`strtree`), the full scan without an index
(:func:`naive`) and the same polygons in PostGIS (:class:`PostGISReference`, timed by :func:`postgis`);
:func:`throughput` turns per-call times into calls per second.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import shapely

from bench.common import Context, summarize, timed
from bench.geofence_city import MARGIN_M
from geodata.geo import metres_per_degree, segment_distance2
from geodata.geofences import Geofence, GeofenceIndex


class StrtreeEvaluator:
    """The alternative design: an STRtree on the polygons' boxes, prepared ``contains_xy``, and the
    geodesic distance to every segment of each candidate (the same formula as ours)."""

    def __init__(self, fences: list[Geofence]) -> None:
        self.geoms = np.array([f.geometry for f in fences], dtype=object)
        self.tree = shapely.STRtree(self.geoms)
        shapely.prepare(self.geoms)
        rings, ring_of = shapely.get_rings(shapely.get_parts(self.geoms), return_index=True)
        _, part_of = shapely.get_parts(self.geoms, return_index=True)
        xy, vertex_of = shapely.get_coordinates(rings, return_index=True)
        a = np.flatnonzero(vertex_of[1:] == vertex_of[:-1])
        owner = part_of[ring_of[vertex_of[a]]]
        order = np.argsort(owner, kind="stable")
        a, owner = a[order], owner[order]
        self.segments = np.vstack([xy[a, 1], xy[a, 0], xy[a + 1, 1], xy[a + 1, 0]])
        count = np.bincount(owner, minlength=len(fences))
        self.start, self.count = np.cumsum(count) - count, count

    def evaluate(self, lat: float, lon: float, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m_lat, m_lon = metres_per_degree(lat)
        dlat, dlon = margin / m_lat, margin / m_lon
        cand = np.sort(self.tree.query(shapely.box(lon - dlon, lat - dlat, lon + dlon, lat + dlat)))
        if len(cand) == 0:
            return cand, cand.astype(bool), cand.astype(float)
        starts, counts = self.start[cand], self.count[cand]
        first = np.cumsum(counts) - counts
        seg = np.repeat(starts - first, counts) + np.arange(int(counts.sum()))
        d = np.sqrt(np.minimum.reduceat(segment_distance2(lat, lon, self.segments[:, seg]), first))
        inside = shapely.contains_xy(self.geoms[cand], lon, lat)
        signed = np.where(inside, -d, d)
        keep = signed <= margin
        return cand[keep], inside[keep], signed[keep]


class PostGISReference:
    """The same polygons in PostGIS, GiST-indexed, queried the way a user would."""

    CONTAINS = "SELECT id FROM {t} WHERE ST_Contains(geom, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326))"
    EVALUATE = """
        SELECT id, ST_Intersects(geom, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)) AS inside,
               ST_Distance(bnd, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography) AS boundary_m
        FROM {t}
        WHERE ST_DWithin(geog, ST_SetSRID(ST_MakePoint(%(lon)s, %(lat)s), 4326)::geography, %(margin)s)
    """

    def __init__(self, ctx: Context, fences: list[Geofence]) -> None:
        self.pg = ctx.postgres()
        self.table = f"geofences_{len(fences)}"
        self.conn = self.pg.connect()
        self.load_s, self.index_s = self._load(fences)
        self.contains_sql = self.CONTAINS.format(t=self.table)
        self.evaluate_sql = self.EVALUATE.format(t=self.table)

    def _load(self, fences: list[Geofence]) -> tuple[float, float]:
        conn = self.conn
        conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        conn.execute(f"""CREATE UNLOGGED TABLE {self.table} (
            id int PRIMARY KEY, geom geometry(Geometry, 4326) NOT NULL,
            geog geography(Geometry, 4326) NOT NULL, bnd geography(Geometry, 4326) NOT NULL)""")
        t0 = time.perf_counter()
        step_rows = 20_000
        with conn.cursor() as cur, cur.copy(f"COPY {self.table} (id, geom, geog, bnd) FROM STDIN") as copy:
            for lo in range(0, len(fences), step_rows):
                geoms = shapely.set_srid(np.array([f.geometry for f in fences[lo:lo + step_rows]], dtype=object),
                                         4326)
                wkb = shapely.to_wkb(geoms, hex=True, include_srid=True).tolist()
                bnd = shapely.to_wkb(shapely.set_srid(shapely.boundary(geoms), 4326), hex=True,
                                     include_srid=True).tolist()
                copy.write("".join(f"{lo + i}\t{w}\t{w}\t{b}\n" for i, (w, b) in enumerate(zip(wkb, bnd))))
        t1 = time.perf_counter()
        conn.execute(f"CREATE INDEX ON {self.table} USING gist (geom)")
        conn.execute(f"CREATE INDEX ON {self.table} USING gist (geog)")
        conn.execute(f"ANALYZE {self.table}")
        return t1 - t0, time.perf_counter() - t1

    def contains(self, lat: float, lon: float) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(self.contains_sql, {"lat": lat, "lon": lon}, prepare=True)
            return cur.fetchall()

    def evaluate(self, lat: float, lon: float, margin: float) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(self.evaluate_sql, {"lat": lat, "lon": lon, "margin": margin}, prepare=True)
            return cur.fetchall()

    def explain_ms(self, sql: str, params: dict[str, Any]) -> float:
        """Server-side execution time of one query (EXPLAIN ANALYZE, per-node timing off)."""
        with self.conn.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql, params)
            return float(cur.fetchone()[0][0]["Execution Time"])

    def plan_uses_index(self, sql: str, params: dict[str, Any]) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("EXPLAIN " + sql, params)
            return "Index" in "\n".join(r[0] for r in cur.fetchall())

    def close(self) -> None:
        self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        self.conn.close()


def throughput(times: list[float]) -> float:
    """Calls per second of the calls timed."""
    total = float(np.sum(times))
    return len(times) / total if total > 0 else float("nan")


def strtree(fences: list[Geofence], index: GeofenceIndex, points: np.ndarray, ours: list[Any], q: int
            ) -> dict[str, Any]:
    """The STRtree design on the first ``q`` points: build time, latency and agreement with our answers."""
    t = time.perf_counter()
    alt = StrtreeEvaluator(fences)
    build_s = time.perf_counter() - t
    args = [(float(la), float(lo), MARGIN_M) for la, lo in points[:q]]
    timed(alt.evaluate, args[:50])
    times, results = timed(alt.evaluate, args)
    agree = 0
    for (pos, inside, signed), mine in zip(results, ours[:q]):
        a = {p: (bool(i), s) for p, i, s in zip(pos.tolist(), inside.tolist(), signed.tolist())}
        b = {p: (bool(i), s) for p, i, s in zip(mine.positions.tolist(), mine.inside.tolist(),
                                                mine.signed_m.tolist())}
        same_keys = a.keys() == b.keys() and all(a[k][0] == b[k][0] for k in a)
        close = same_keys and all(b[k][1] == -math.inf and a[k][1] < -MARGIN_M + 0.05
                                  or abs(a[k][1] - b[k][1]) < 0.05 for k in a)
        agree += bool(close)
    return {"build_s": build_s, "evaluate": {**summarize(times), "evals_per_s": throughput(times)},
            "agreement_with_ours": agree / max(len(results), 1)}


def naive(fences: list[Geofence], points: np.ndarray, contained: list[list[str]], q: int) -> dict[str, Any]:
    """``contains_xy`` over all polygons for the first ``q`` points: latency and agreement with ``containing``."""
    geoms = np.array([f.geometry for f in fences], dtype=object)
    ids = np.array([f.id for f in fences], dtype=object)
    shapely.prepare(geoms)

    def scan(lat: float, lon: float) -> list[str]:
        return sorted(ids[shapely.contains_xy(geoms, lon, lat)].tolist())

    times, results = timed(scan, [(float(la), float(lo)) for la, lo in points[:q]])
    same = all(r == sorted(c) for r, c in zip(results, contained[:q]))
    return {"containing": {**summarize(times), "evals_per_s": throughput(times)}, "same_results_as_ours": same}


def postgis(ctx: Context, fences: list[Geofence], index: GeofenceIndex, points: np.ndarray, ours: list[Any],
            contained: list[list[str]], cfg: dict[str, Any]) -> dict[str, Any]:
    """The same polygons in PostGIS: load, latency from Python and on the server, agreement with our answers."""
    ref = PostGISReference(ctx, fences)
    try:
        q = min(cfg["postgis_queries"], len(points))
        pts = [(float(la), float(lo)) for la, lo in points[:q]]
        for la, lo in pts[:30]:  # warm up: prepare the statements, fill the buffer cache
            ref.contains(la, lo)
            ref.evaluate(la, lo, MARGIN_M)
        ctimes, crows = timed(ref.contains, pts)
        etimes, erows = timed(ref.evaluate, [(la, lo, MARGIN_M) for la, lo in pts])
        same_contains = sum(sorted(f"gf{r[0]}" for r in rows) == sorted(c) for rows, c in zip(crows, contained))
        same_eval, worst = 0, 0.0
        for rows, mine in zip(erows, ours):
            theirs = {r[0]: (bool(r[1]), float(r[2])) for r in rows}
            mine_d = {p: (bool(i), s) for p, i, s in zip(mine.positions.tolist(), mine.inside.tolist(),
                                                        mine.signed_m.tolist())}
            if theirs.keys() == mine_d.keys() and all(theirs[k][0] == mine_d[k][0] for k in theirs):
                same_eval += 1
                for k, (_, d) in theirs.items():
                    if mine_d[k][1] != -math.inf:
                        worst = max(worst, abs(abs(mine_d[k][1]) - d))
        eq = min(cfg["explain_queries"], q)
        return {
            "load_copy_s": ref.load_s, "gist_indexes_and_analyze_s": ref.index_s,
            "contains": {**summarize(ctimes), "evals_per_s": throughput(ctimes),
                         "server_execution": summarize([ref.explain_ms(ref.contains_sql, {"lat": la, "lon": lo})
                                                        / 1000.0 for la, lo in pts[:eq]]),
                         "plan_uses_index": ref.plan_uses_index(ref.contains_sql, {"lat": pts[0][0], "lon": pts[0][1]}),
                         "same_results_as_ours": same_contains / max(q, 1)},
            "evaluate": {**summarize(etimes), "evals_per_s": throughput(etimes),
                         "server_execution": summarize([ref.explain_ms(ref.evaluate_sql,
                                                                       {"lat": la, "lon": lo, "margin": MARGIN_M})
                                                        / 1000.0 for la, lo in pts[:eq]]),
                         "plan_uses_index": ref.plan_uses_index(ref.evaluate_sql, {"lat": pts[0][0], "lon": pts[0][1],
                                                                                  "margin": MARGIN_M}),
                         "same_fences_and_inside_as_ours": same_eval / max(q, 1),
                         "max_boundary_distance_difference_m": worst},
            "queries": {"contains": " ".join(ref.contains_sql.split()),
                        "evaluate": " ".join(ref.evaluate_sql.split())},
            "versions": ref.pg.versions(),
        }
    finally:
        ref.close()
