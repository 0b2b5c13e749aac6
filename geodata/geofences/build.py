"""Building a :class:`~geodata.geofences.index.GeofenceIndex`: the fences' geometries turned into the tables
and grids its queries read (circle centres and planes; polygon rings, boxes and per-cell boundary pieces).

What a query does with them: the module docstring of :mod:`geodata.geofences.index`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import shapely

from geodata.geo import plane_coefficients
from geodata.geofences.grid import CircleGrid, PolygonGrid, degrees
from geodata.geofences.rings import FlatRings, cut_pieces, flat_rings, ring_segments


class CircleTables(NamedTuple):
    """The circle fences, by fence position: centres as rows ``[lat, lon]`` and the four
    :func:`geodata.geo.plane_coefficients` rows of each centre (NaN for polygons), and the grid of
    their boxes grown by the reach."""

    centres: np.ndarray
    plane: np.ndarray
    grid: CircleGrid


class PolygonTables(NamedTuple):
    """The polygon fences: what the compiled containment test reads (x, y rows; each ring's first row
    and one past the last; each fence position's rings as [lo, hi)), boxes by fence position as rows
    ``[min_lon, min_lat, max_lon, max_lat]`` (NaN for circles), and the cell grid, its owners numbered
    by fence position."""

    rings: tuple[np.ndarray, np.ndarray, np.ndarray]
    bounds: np.ndarray
    grid: PolygonGrid


def build_circles(geoms: np.ndarray, is_circle: np.ndarray, radius: np.ndarray, reach_m: float) -> CircleTables:
    """The tables of the circle fences among ``geoms`` (their centre points; ``radius`` by fence position)."""
    n_fences = len(geoms)
    circles = np.flatnonzero(is_circle)
    xy = shapely.get_coordinates(geoms[circles]) if len(circles) else np.zeros((0, 2))
    centres = np.full((2, n_fences), np.nan)
    centres[:, circles] = xy[:, ::-1].T
    plane = np.full((4, n_fences), np.nan)
    for i, lat in zip(circles.tolist(), xy[:, 1].tolist()):
        plane[:, i] = plane_coefficients(lat)
    dlat, dlon = degrees(radius[circles] + reach_m, xy[:, 1])
    box = np.vstack([xy[:, 0] - dlon, xy[:, 1] - dlat, xy[:, 0] + dlon, xy[:, 1] + dlat])
    return CircleTables(centres, plane, CircleGrid(box, circles))


def build_polygons(geoms: np.ndarray, is_circle: np.ndarray, reach_m: float, cell_deg: float) -> PolygonTables:
    """The tables of the polygon fences among ``geoms``, on a grid of ``cell_deg`` degrees.

    Prepares the polygons' geometries in place.
    """
    n_fences = len(geoms)
    polygons = np.flatnonzero(~is_circle)
    polygon_geoms = geoms[polygons]
    # Prepared geometries make contains_xy an indexed point-in-polygon test.
    shapely.prepare(polygon_geoms)
    rings = flat_rings(polygon_geoms)
    ring_tables = _ring_tables(rings, polygons, n_fences)
    segments, segment_owner = ring_segments(polygon_geoms, rings)
    del rings
    # Owners are numbered among polygons here and mapped back to fence positions at the end.
    pieces, piece_owner = cut_pieces(segments, segment_owner)
    del segments, segment_owner
    order = np.argsort(piece_owner, kind="stable")
    pieces, piece_owner = np.ascontiguousarray(pieces[:, order]), piece_owner[order]
    box = shapely.bounds(polygon_geoms).T if len(polygons) else np.zeros((4, 0))
    bounds = np.full((4, n_fences), np.nan)
    bounds[:, polygons] = box
    grid = PolygonGrid(pieces, piece_owner, polygon_geoms, box, reach_m, cell_deg)
    del pieces, piece_owner
    # Back from polygon numbers to fence positions, once, so that queries need no mapping.
    grid.owner = polygons[grid.owner].astype(grid.owner.dtype)
    grid.mixed = polygons[grid.mixed]
    grid.interior = polygons[grid.interior]
    return PolygonTables(ring_tables, bounds, grid)


def _ring_tables(rings: FlatRings, positions: np.ndarray, n_fences: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the compiled containment test reads: (x, y rows; each ring's first row and one past the last;
    the rings of each fence position as [lo, hi) — none for circles)."""
    ring_start = np.searchsorted(rings.vertex_of, np.arange(len(rings.polygon_of) + 1)).astype(np.int64)
    numbers = np.arange(len(positions))
    fence_rings = np.zeros((2, n_fences), dtype=np.int64)
    fence_rings[0, positions] = np.searchsorted(rings.polygon_of, numbers, side="left")
    fence_rings[1, positions] = np.searchsorted(rings.polygon_of, numbers, side="right")
    return rings.xy, ring_start, fence_rings
