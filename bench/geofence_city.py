"""Benchmark 3's synthetic city: the fences, the query points and the walkers, all deterministic.

:func:`synthetic_fences` builds ``n`` fences around Berlin at a constant density (shops, sites and parks,
two-part sites and districts, some with holes); :func:`query_points` picks points anywhere, near a
boundary and inside a fence; :func:`walkers` makes the fixes for the state machine.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import shapely

from geodata.geo import metres_per_degree
from geodata.geofences import Fix, Geofence

LAT0, LON0 = 52.52, 13.405
DENSITY_PER_KM2 = 100.0
MARGIN_M = 50.0  # the largest hysteresis synthetic_fences gives: every query asks this margin

# Share of fences per kind, and their radius range in metres.
KINDS = {"shop": (0.62, 15.0, 60.0), "site": (0.33, 80.0, 300.0), "two_part": (0.04, 60.0, 200.0),
         "district": (0.01, 500.0, 2500.0)}
_SCHEDULES = ("Mo-Fr 08:00-20:00", "Mo-Sa 09:00-21:00", "24/7")


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
    kind = rng.choice(len(KINDS), size=n, p=[v[0] for v in KINDS.values()])
    lat = LAT0 + rng.uniform(-side / 2, side / 2, n) / m_lat
    lon = LON0 + rng.uniform(-side / 2, side / 2, n) / m_lon
    geoms = np.empty(n, dtype=object)
    for code, (name, (_, r_lo, r_hi)) in enumerate(KINDS.items()):
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
