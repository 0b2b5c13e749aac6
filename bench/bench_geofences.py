"""Benchmark 3 — geofences: point evaluations per second against 100,000 polygons, in-process.

``python -m bench.bench_geofences [--smoke]`` runs it alone (it also has the
``NAME`` / ``TITLE`` / ``run(ctx)`` / ``tables(result)`` of every benchmark
module, so :mod:`bench.run` can register it). It prints a table and writes
``bench/results/geofences.json`` (``geofences-smoke.json`` for ``--smoke``).

The fences: a deterministic synthetic city (:func:`synthetic_fences`), 100
fences per km² around Berlin (100k → 32 × 32 km), mixed sizes — shops (15–60
m), sites and parks (80–300 m, a third with a hole), two-part sites, and
districts (0.5–2.5 km, hundreds of vertices, some with holes) overlapping
everything — with hysteresis 10–50 m, so every query asks a 50 m margin.
Query points: uniform over the city, near a fence's boundary, and inside a
fence.

Measured, on the same fences and points, in the same run:

- **ours, one point** — ``GeofenceIndex.evaluate`` (inside + signed
  distance to the boundary of every fence within 50 m) and ``containing``;
  p50/p99 per call and evaluations per second back to back;
- **ours, batches of 100** — ``evaluate_many`` (what an ingest worker does
  with a batch of location events);
- **state machine** — ``step`` per fix for simulated walkers (evaluation +
  schedules + hysteresis + events);
- **STRtree alternative** — shapely STRtree on the polygons' boxes, prepared
  ``contains_xy`` and the distance to every segment of each candidate: the
  other design the brief asked to measure;
- **naive** — ``contains_xy`` over all polygons at once (no index);
- **PostGIS** — the same polygons in a table (COPY) with GiST indexes, from
  Python with psycopg 3 (prepared statements, one connection):
  ``ST_Contains(geom, point)`` for ``containing``, and for ``evaluate``
  ``ST_DWithin(geog, point, 50)`` returning ``ST_Intersects`` and the
  geodesic distance to the boundary; latency from Python and the server's
  own execution time (``EXPLAIN ANALYZE``).

Ratios compare medians measured here; the machine (cores, memory, load
average at start and end, the cost of one small NumPy operation) is
recorded, because absolute times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rich.console import Console
from rich.table import Table

from bench.common import (
    RESULTS_DIR,
    Context,
    ensure_debian_tools,
    machine_info,
    ratio,
    rss_bytes,
    summarize,
    timed,
    write_json,
)
from geodata.geo import metres_per_degree, segment_distance2
from geodata.geofences import Fix, Geofence, GeofenceIndex, step

NAME = "geofences"
TITLE = "Benchmark 3 — geofences, point evaluation in-process"

LAT0, LON0 = 52.52, 13.405
DENSITY_PER_KM2 = 100.0
MARGIN_M = 50.0
BATCH = 100
TARGET_EVALS_PER_S = 20_000

FULL = {"fences": 100_000, "queries": 20_000, "batch_points": 20_000, "state_walkers": 500, "state_fixes": 40,
        "strtree_queries": 2_000, "naive_queries": 20, "postgis_queries": 3_000, "explain_queries": 100}
SMOKE = {"fences": 3_000, "queries": 500, "batch_points": 500, "state_walkers": 20, "state_fixes": 20,
         "strtree_queries": 200, "naive_queries": 5, "postgis_queries": 200, "explain_queries": 10}

# Share of fences per kind, and their radius range in metres.
_KINDS = {"shop": (0.62, 15.0, 60.0), "site": (0.33, 80.0, 300.0), "two_part": (0.04, 60.0, 200.0),
          "district": (0.01, 500.0, 2500.0)}
_SCHEDULES = ("Mo-Fr 08:00-20:00", "Mo-Sa 09:00-21:00", "24/7")


# --------------------------------------------------------------------------- the synthetic city


def _rings(rng: np.random.Generator, lat: np.ndarray, lon: np.ndarray, radius: np.ndarray, k: np.ndarray,
           lo: float) -> np.ndarray:
    """One star-shaped ring per centre: ``k`` vertices at radius ``lo``–1 × ``radius`` metres.

    Angles are stratified (each vertex in its own sector, gaps below 180°),
    so no ring crosses itself.
    """
    owner = np.repeat(np.arange(len(lat)), k)
    j = np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    angle = 2 * np.pi * (j + rng.uniform(0.0, 0.8, len(owner))) / k[owner]
    r = radius[owner] * rng.uniform(lo, 1.0, len(owner))
    m_lat = np.array([metres_per_degree(x)[0] for x in lat.tolist()])[owner]
    m_lon = np.array([metres_per_degree(x)[1] for x in lat.tolist()])[owner]
    xy = np.column_stack([lon[owner] + r * np.sin(angle) / m_lon, lat[owner] + r * np.cos(angle) / m_lat])
    return shapely.linearrings(xy, indices=owner)


def synthetic_fences(n: int, seed: int = 3) -> tuple[list[Geofence], float]:
    """``n`` deterministic fences around Berlin at a constant density; also the side of the square in metres."""
    rng = np.random.default_rng(seed)
    side = math.sqrt(n / DENSITY_PER_KM2) * 1000.0
    m_lat, m_lon = metres_per_degree(LAT0)
    kind = rng.choice(len(_KINDS), size=n, p=[v[0] for v in _KINDS.values()])
    lat = LAT0 + rng.uniform(-side / 2, side / 2, n) / m_lat
    lon = LON0 + rng.uniform(-side / 2, side / 2, n) / m_lon
    geoms = np.empty(n, dtype=object)
    for code, (name, (_, r_lo, r_hi)) in enumerate(_KINDS.items()):
        sel = np.flatnonzero(kind == code)
        if len(sel) == 0:
            continue
        radius = rng.uniform(r_lo, r_hi, len(sel))
        if name == "shop":
            geoms[sel] = shapely.polygons(_rings(rng, lat[sel], lon[sel], radius, rng.integers(5, 13, len(sel)), 0.7))
        elif name in ("site", "district"):
            k = rng.integers(12, 41, len(sel)) if name == "site" else rng.integers(40, 201, len(sel))
            shells = _rings(rng, lat[sel], lon[sel], radius, k, 0.7 if name == "site" else 0.8)
            holed = np.flatnonzero(rng.random(len(sel)) < 0.3)
            holes = _rings(rng, lat[sel][holed], lon[sel][holed], radius[holed] * 0.3,
                           rng.integers(6, 12, len(holed)), 0.6)
            rings = np.concatenate([shells, holes])
            index = np.concatenate([np.arange(len(sel)), holed])
            order = np.argsort(index, kind="stable")  # shell first, then its hole
            geoms[sel] = shapely.polygons(rings[order], indices=index[order])
        else:
            second_lat = lat[sel] + 3 * radius / m_lat
            parts = shapely.polygons(np.concatenate([
                _rings(rng, lat[sel], lon[sel], radius, rng.integers(6, 16, len(sel)), 0.7),
                _rings(rng, second_lat, lon[sel], radius, rng.integers(6, 16, len(sel)), 0.7)]))
            index = np.concatenate([np.arange(len(sel))] * 2)
            order = np.argsort(index, kind="stable")
            geoms[sel] = shapely.multipolygons(parts[order], indices=index[order])
    if not shapely.is_valid(geoms).all():
        raise AssertionError("the generator made an invalid polygon")
    hysteresis = rng.choice([10.0, 20.0, 30.0, 50.0], n)
    dwell = rng.choice([-1.0, 60.0, 300.0], n)
    schedule = rng.integers(0, 10 * len(_SCHEDULES), n)  # one fence in ten has a schedule
    fences = [Geofence(f"gf{i}", geoms[i], hysteresis_m=float(hysteresis[i]),
                       dwell_s=None if dwell[i] < 0 else float(dwell[i]),
                       schedule=_SCHEDULES[schedule[i]] if schedule[i] < len(_SCHEDULES) else None,
                       timezone="Europe/Berlin") for i in range(n)]
    return fences, side


def query_points(fences: list[Geofence], side: float, count: int, seed: int = 11) -> np.ndarray:
    """Rows (lat, lon): 40 % anywhere in the city, 30 % within ~25 m of a boundary, 30 % inside a fence."""
    rng = np.random.default_rng(seed)
    m_lat, m_lon = metres_per_degree(LAT0)
    kind = rng.choice(3, size=count, p=[0.4, 0.3, 0.3])
    out = np.column_stack([LAT0 + rng.uniform(-side / 2, side / 2, count) / m_lat,
                           LON0 + rng.uniform(-side / 2, side / 2, count) / m_lon])
    picked = rng.integers(0, len(fences), count)
    geoms = np.array([fences[i].geometry for i in picked.tolist()], dtype=object)
    edge = np.flatnonzero(kind == 1)
    if len(edge):
        vertex = shapely.get_coordinates(shapely.get_point(shapely.get_exterior_ring(
            shapely.get_geometry(geoms[edge], 0)), 0))
        out[edge] = np.column_stack([vertex[:, 1] + rng.normal(0, 25, len(edge)) / m_lat,
                                     vertex[:, 0] + rng.normal(0, 25, len(edge)) / m_lon])
    inner = np.flatnonzero(kind == 2)
    if len(inner):
        xy = shapely.get_coordinates(shapely.point_on_surface(geoms[inner]))
        out[inner] = xy[:, ::-1]
    return out


def walkers(side: float, count: int, fixes: int, seed: int = 5) -> list[list[Fix]]:
    """People walking straight at 1.4 m/s in random directions, a fix every 10 s (accuracy 3–30 m)."""
    rng = np.random.default_rng(seed)
    m_lat, m_lon = metres_per_degree(LAT0)
    t0 = datetime(2024, 6, 3, 8, 0, tzinfo=timezone.utc)
    out = []
    for _ in range(count):
        lat = LAT0 + rng.uniform(-side / 3, side / 3) / m_lat
        lon = LON0 + rng.uniform(-side / 3, side / 3) / m_lon
        heading = rng.uniform(0, 2 * np.pi)
        steps = np.arange(fixes) * 14.0
        out.append([Fix(float(lat + s * np.cos(heading) / m_lat + rng.normal(0, 5) / m_lat),
                        float(lon + s * np.sin(heading) / m_lon + rng.normal(0, 5) / m_lon),
                        t0 + timedelta(seconds=10 * i), float(rng.uniform(3, 30)))
                    for i, s in enumerate(steps.tolist())])
    return out


# --------------------------------------------------------------------------- references


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


# --------------------------------------------------------------------------- measuring


def _calibration() -> dict[str, float]:
    """The cost of one small NumPy operation now: how loaded the machine is, in one number."""
    a = np.arange(100.0)
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(2000):
            a + a
        best = min(best, (time.perf_counter() - t) / 2000)
    return {"numpy_small_op_us": best * 1e6, "load_average_1m": os.getloadavg()[0]}


def _throughput(times: list[float]) -> float:
    total = float(np.sum(times))
    return len(times) / total if total > 0 else float("nan")


def _ours(index: GeofenceIndex, points: np.ndarray, cfg: dict[str, Any]) -> dict[str, Any]:
    lats, lons = points[:, 0].tolist(), points[:, 1].tolist()
    args = [(la, lo, MARGIN_M) for la, lo in zip(lats, lons)]
    timed(index.evaluate, args[:200])  # warm up: caches, branch predictors, lazily built GEOS indexes
    cpu = time.process_time()
    times, results = timed(index.evaluate, args)
    cpu = time.process_time() - cpu
    # Per CPU-second of this process: what the work costs when other processes take turns on the cores.
    out: dict[str, Any] = {"evaluate": {**summarize(times), "evals_per_s": _throughput(times),
                                        "evals_per_cpu_s": len(times) / cpu if cpu > 0 else None}}
    out["fences_per_point_mean"] = float(np.mean([len(r.positions) for r in results]))
    out["inside_per_point_mean"] = float(np.mean([int(r.inside.sum()) for r in results]))
    ctimes, contained = timed(index.containing, [(la, lo) for la, lo in zip(lats, lons)])
    out["containing"] = {**summarize(ctimes), "evals_per_s": _throughput(ctimes)}
    n = min(cfg["batch_points"], len(points))
    batches = [(points[lo:lo + BATCH, 0], points[lo:lo + BATCH, 1], MARGIN_M) for lo in range(0, n, BATCH)]
    timed(index.evaluate_many, batches[:3])
    cpu = time.process_time()
    btimes, bres = timed(index.evaluate_many, batches)
    cpu = time.process_time() - cpu
    per_point = [t / len(b[0]) for t, b in zip(btimes, batches)]
    out["evaluate_many"] = {"batch_size": BATCH, **summarize(per_point), "evals_per_s": n / float(np.sum(btimes)),
                            "evals_per_cpu_s": n / cpu if cpu > 0 else None, "batch": summarize(btimes)}
    same = True
    for k, b in enumerate(bres[:10]):
        for i, r in enumerate(results[k * BATCH:(k + 1) * BATCH]):
            e = b.for_point(i)
            same &= sorted(zip(e.positions.tolist(), e.inside.tolist())) == sorted(
                zip(r.positions.tolist(), r.inside.tolist()))
    out["evaluate_many_same_as_evaluate"] = bool(same)
    out["_results"] = results
    out["_contained"] = contained
    return out


def _state_machine(index: GeofenceIndex, walks: list[list[Fix]]) -> dict[str, Any]:
    times = []
    counts = {"geofence.entered": 0, "geofence.exited": 0, "geofence.dwelled": 0}
    clock = time.perf_counter
    for walk in walks:
        state = None
        for f in walk:
            t = clock()
            state, events = step(index, state, f)
            times.append(clock() - t)
            for e in events:
                counts[e.type] += 1
    return {"step": {**summarize(times), "fixes_per_s": _throughput(times)}, "events": counts,
            "fixes": len(times)}


def _strtree(fences: list[Geofence], index: GeofenceIndex, points: np.ndarray, ours: list[Any], q: int
             ) -> dict[str, Any]:
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
    return {"build_s": build_s, "evaluate": {**summarize(times), "evals_per_s": _throughput(times)},
            "agreement_with_ours": agree / max(len(results), 1)}


def _naive(fences: list[Geofence], points: np.ndarray, contained: list[list[str]], q: int) -> dict[str, Any]:
    geoms = np.array([f.geometry for f in fences], dtype=object)
    ids = np.array([f.id for f in fences], dtype=object)
    shapely.prepare(geoms)

    def scan(lat: float, lon: float) -> list[str]:
        return sorted(ids[shapely.contains_xy(geoms, lon, lat)].tolist())

    times, results = timed(scan, [(float(la), float(lo)) for la, lo in points[:q]])
    same = all(r == sorted(c) for r, c in zip(results, contained[:q]))
    return {"containing": {**summarize(times), "evals_per_s": _throughput(times)}, "same_results_as_ours": same}


def _postgis(ctx: Context, fences: list[Geofence], index: GeofenceIndex, points: np.ndarray, ours: list[Any],
             contained: list[list[str]], cfg: dict[str, Any]) -> dict[str, Any]:
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
            "contains": {**summarize(ctimes), "evals_per_s": _throughput(ctimes),
                         "server_execution": summarize([ref.explain_ms(ref.contains_sql, {"lat": la, "lon": lo})
                                                        / 1000.0 for la, lo in pts[:eq]]),
                         "plan_uses_index": ref.plan_uses_index(ref.contains_sql, {"lat": pts[0][0], "lon": pts[0][1]}),
                         "same_results_as_ours": same_contains / max(q, 1)},
            "evaluate": {**summarize(etimes), "evals_per_s": _throughput(etimes),
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


def run(ctx: Context) -> dict[str, Any]:
    """Measure everything (see the module docstring); a JSON-able dict with params, results, ratios, targets."""
    cfg = dict(SMOKE if ctx.smoke else FULL)
    for key in ("fences", "queries"):
        if ctx.options.get(key):
            cfg[key] = int(ctx.options[key])
    with_postgis = not ctx.options.get("no_postgis", False)
    load: dict[str, Any] = {"start": _calibration()}
    results: dict[str, Any] = {}

    t = time.perf_counter()
    fences, side = synthetic_fences(cfg["fences"])
    results["generate_s"] = time.perf_counter() - t
    geoms = np.array([f.geometry for f in fences], dtype=object)
    results["vertices_total"] = int(shapely.get_num_coordinates(geoms).sum())
    results["with_holes"] = int((shapely.get_num_interior_rings(geoms) > 0).sum())
    results["multipolygons"] = int((shapely.get_type_id(geoms) == 6).sum())
    del geoms
    gc.collect()
    rss0 = rss_bytes()
    t = time.perf_counter()
    index = GeofenceIndex(fences)
    results["index_build_s"] = time.perf_counter() - t
    results["index_rss_mib"] = (rss_bytes() - rss0) / 2**20
    gc.collect()
    gc.freeze()  # the index is long-lived, as in a service: keep it out of the collector's way
    ctx.log(f"geofences: {len(fences):,} generated in {results['generate_s']:.1f} s, "
            f"indexed in {results['index_build_s']:.1f} s (+{results['index_rss_mib']:.0f} MiB)")

    points = query_points(fences, side, cfg["queries"])
    ours = _ours(index, points, cfg)
    evaluated, contained = ours.pop("_results"), ours.pop("_contained")
    results["ours"] = ours
    ctx.log(f"geofences: evaluate p50 {ours['evaluate']['p50_ms'] * 1000:.1f} µs, "
            f"{ours['evaluate']['evals_per_s']:,.0f}/s; batches of {BATCH}: "
            f"{ours['evaluate_many']['evals_per_s']:,.0f}/s")
    results["state_machine"] = _state_machine(index, walkers(side, cfg["state_walkers"], cfg["state_fixes"]))
    results["strtree_alternative"] = _strtree(fences, index, points, evaluated, cfg["strtree_queries"])
    results["naive_full_scan"] = _naive(fences, points, contained, cfg["naive_queries"])
    if with_postgis:
        results["postgis"] = _postgis(ctx, fences, index, points, evaluated, contained, cfg)
        ctx.log(f"geofences: PostGIS evaluate p50 {results['postgis']['evaluate']['p50_ms'] * 1000:.0f} µs, "
                f"contains p50 {results['postgis']['contains']['p50_ms'] * 1000:.0f} µs")
    gc.unfreeze()
    load["end"] = _calibration()

    o = results["ours"]
    ratios: dict[str, Any] = {
        "strtree_p50_over_ours_p50": ratio(results["strtree_alternative"]["evaluate"]["p50_ms"],
                                           o["evaluate"]["p50_ms"]),
        "naive_p50_over_ours_containing_p50": ratio(results["naive_full_scan"]["containing"]["p50_ms"],
                                                    o["containing"]["p50_ms"]),
        "batch_evals_per_s_over_single": ratio(o["evaluate_many"]["evals_per_s"], o["evaluate"]["evals_per_s"]),
    }
    if with_postgis:
        pg = results["postgis"]
        ratios.update({
            "postgis_evaluate_p50_over_ours_p50": ratio(pg["evaluate"]["p50_ms"], o["evaluate"]["p50_ms"]),
            "postgis_evaluate_p99_over_ours_p99": ratio(pg["evaluate"]["p99_ms"], o["evaluate"]["p99_ms"]),
            "ours_evals_per_s_over_postgis_evaluate": ratio(o["evaluate"]["evals_per_s"],
                                                            pg["evaluate"]["evals_per_s"]),
            "ours_batch_evals_per_s_over_postgis_evaluate": ratio(o["evaluate_many"]["evals_per_s"],
                                                                  pg["evaluate"]["evals_per_s"]),
            "postgis_server_evaluate_p50_over_ours_p50": ratio(pg["evaluate"]["server_execution"]["p50_ms"],
                                                               o["evaluate"]["p50_ms"]),
            "postgis_contains_p50_over_ours_containing_p50": ratio(pg["contains"]["p50_ms"], o["containing"]["p50_ms"]),
            "postgis_server_contains_p50_over_ours_containing_p50": ratio(
                pg["contains"]["server_execution"]["p50_ms"], o["containing"]["p50_ms"]),
        })
    targets = {
        "evaluate_evals_per_s": {"target_min": TARGET_EVALS_PER_S, "measured": o["evaluate"]["evals_per_s"],
                                 "met": o["evaluate"]["evals_per_s"] >= TARGET_EVALS_PER_S, "fences": len(fences)},
        "evaluate_many_evals_per_s": {"target_min": TARGET_EVALS_PER_S, "measured": o["evaluate_many"]["evals_per_s"],
                                      "met": o["evaluate_many"]["evals_per_s"] >= TARGET_EVALS_PER_S,
                                      "fences": len(fences)},
    }
    return {
        "params": {**cfg, "margin_m": MARGIN_M, "batch": BATCH, "density_per_km2": DENSITY_PER_KM2,
                   "side_km": side / 1000.0, "kinds": {k: {"share": v[0], "radius_m": [v[1], v[2]]}
                                                       for k, v in _KINDS.items()},
                   "reach_m": index.reach_m, "gc": "gc.freeze() after building the index"},
        "load": load,
        "results": results,
        "ratios": ratios,
        "targets": targets,
    }


# --------------------------------------------------------------------------- printing


def _us(s: dict[str, Any] | None) -> str:
    return "—" if not s else f"{s['p50_ms'] * 1000:.1f} / {s['p99_ms'] * 1000:.1f}"


def _rate(s: dict[str, Any] | None, key: str = "evals_per_s") -> str:
    return "—" if not s or s.get(key) is None else f"{s[key]:,.0f}"


def tables(result: dict[str, Any]) -> list[Table]:
    """The tables to print for a result."""
    r = result["results"]
    o = r["ours"]
    pg = r.get("postgis") or {}
    t = Table(title=f"Geofence evaluation, {result['params']['fences']:,} polygons, margin "
                    f"{result['params']['margin_m']:g} m — per call µs (p50 / p99), evaluations/s")
    for col in ("what", "p50 / p99 µs", "evals/s", "evals/CPU-s"):
        t.add_column(col, justify="right" if col != "what" else "left")
    t.add_row("ours evaluate (inside + signed distance)", _us(o["evaluate"]), _rate(o["evaluate"]),
              _rate(o["evaluate"], "evals_per_cpu_s"))
    t.add_row(f"ours evaluate_many (per point, batches of {o['evaluate_many']['batch_size']})",
              _us(o["evaluate_many"]), _rate(o["evaluate_many"]), _rate(o["evaluate_many"], "evals_per_cpu_s"))
    t.add_row("ours containing", _us(o["containing"]), _rate(o["containing"]))
    t.add_row("ours state machine step (per fix)", _us(r["state_machine"]["step"]),
              _rate(r["state_machine"]["step"], "fixes_per_s"))
    t.add_row("STRtree + distance to every segment", _us(r["strtree_alternative"]["evaluate"]),
              _rate(r["strtree_alternative"]["evaluate"]))
    t.add_row("naive contains_xy over all polygons", _us(r["naive_full_scan"]["containing"]),
              _rate(r["naive_full_scan"]["containing"]))
    if pg:
        t.add_row("PostGIS ST_DWithin + ST_Intersects + distance (from Python)", _us(pg["evaluate"]),
                  _rate(pg["evaluate"]))
        t.add_row("  server execution only", _us(pg["evaluate"]["server_execution"]), "—")
        t.add_row("PostGIS ST_Contains (from Python)", _us(pg["contains"]), _rate(pg["contains"]))
        t.add_row("  server execution only", _us(pg["contains"]["server_execution"]), "—")
    rt = Table(title="Ratios, targets and facts")
    rt.add_column("what")
    rt.add_column("value", justify="right")
    for k, v in result["ratios"].items():
        rt.add_row(k, "—" if v is None else f"{v:.2f}")
    for k, v in result["targets"].items():
        rt.add_row(f"target {k} (≥ {v['target_min']:,})", f"{v['measured']:,.0f} {'met' if v['met'] else 'NOT met'}")
    rt.add_row("index build s / RSS MiB", f"{r['index_build_s']:.1f} / {r['index_rss_mib']:.0f}")
    rt.add_row("fences per point within the margin (inside)",
               f"{o['fences_per_point_mean']:.1f} ({o['inside_per_point_mean']:.1f})")
    rt.add_row("STRtree answers = ours", f"{r['strtree_alternative']['agreement_with_ours']:.1%}")
    rt.add_row("naive answers = ours", str(r["naive_full_scan"]["same_results_as_ours"]))
    if pg:
        rt.add_row("PostGIS contains answers = ours", f"{pg['contains']['same_results_as_ours']:.1%}")
        rt.add_row("PostGIS evaluate answers = ours (fences + inside)",
                   f"{pg['evaluate']['same_fences_and_inside_as_ours']:.1%}, distances within "
                   f"{pg['evaluate']['max_boundary_distance_difference_m']:.3f} m")
    sm = r["state_machine"]
    rt.add_row("state machine events", ", ".join(f"{k.split('.')[1]} {v}" for k, v in sm["events"].items())
               + f" over {sm['fixes']:,} fixes")
    ld = result["load"]
    rt.add_row("machine load: small NumPy op µs / load avg (start → end)",
               f"{ld['start']['numpy_small_op_us']:.2f} / {ld['start']['load_average_1m']:.1f} → "
               f"{ld['end']['numpy_small_op_us']:.2f} / {ld['end']['load_average_1m']:.1f}")
    return [t, rt]


# --------------------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.bench_geofences [--smoke] [--fences N] [--queries N] [--no-postgis] [--out DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_geofences", description=TITLE)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (well under 30 s)")
    parser.add_argument("--fences", type=int, help=f"number of fences (default {FULL['fences']:,})")
    parser.add_argument("--queries", type=int, help="timed single-point queries")
    parser.add_argument("--no-postgis", action="store_true", help="skip the PostGIS reference")
    parser.add_argument("--no-install", action="store_true", help="do not run `make bench-sysdeps` when "
                                                                  "PostgreSQL is missing")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result")
    args = parser.parse_args(argv)
    console = Console(width=160)
    if not args.no_postgis and not args.no_install:
        ensure_debian_tools(console, {})
    ctx = Context(smoke=args.smoke, out_dir=args.out, console=console,
                  options={"fences": args.fences, "queries": args.queries, "no_postgis": args.no_postgis})
    machine = machine_info()
    console.rule(TITLE)
    console.print(f"machine: {machine.get('cpu_model')}, {machine.get('cores')} cores, "
                  f"{machine.get('memory_gib')} GiB; {'smoke' if args.smoke else 'full'} run")
    started = time.perf_counter()
    began = datetime.now(timezone.utc)
    try:
        result = run(ctx)
    finally:
        ctx.close()
    record = {"benchmark": NAME, "title": TITLE, "smoke": args.smoke, "started_at": began.isoformat(timespec="seconds"),
              "duration_s": round(time.perf_counter() - started, 2), "machine": machine, **result}
    path = args.out / (f"{NAME}-smoke.json" if args.smoke else f"{NAME}.json")
    write_json(path, record)
    for table in tables(record):
        console.print(table)
    console.print(f"wrote {path} ({record['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
