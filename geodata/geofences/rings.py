"""Polygon rings as flat arrays: their vertices, their segments, and those segments cut into boundary pieces.

The pieces are what :class:`geodata.geofences.grid.PolygonGrid` registers per
cell; the segments are what :meth:`GeofenceIndex.signed_distance_m
<geodata.geofences.index.GeofenceIndex.signed_distance_m>` measures exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import shapely

from geodata.geofences.grid import metres_per_degree_array

# Boundary pieces are at most this long, so that every piece fits a few cells.
PIECE_M = 100.0


class FlatRings(NamedTuple):
    """Every ring of some (multi)polygons, flat: ``xy`` rows (x = lon, y = lat), the ring of each row,
    and the polygon (its number among them) of each ring, ascending."""

    xy: np.ndarray
    vertex_of: np.ndarray
    polygon_of: np.ndarray


def flat_rings(geoms: np.ndarray) -> FlatRings:
    """The rings of ``geoms`` (outer rings, holes, every part) as :class:`FlatRings`."""
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    xy, vertex_of = shapely.get_coordinates(rings, return_index=True)
    return FlatRings(np.ascontiguousarray(xy), vertex_of, part_of[ring_of])


def ring_segments(geoms: np.ndarray, rings: FlatRings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every ring segment of the (multi)polygons as rows ``[lat_a, lon_a, lat_b, lon_b]``, and its polygon's number.

    ``rings``: :func:`flat_rings` of ``geoms`` when the caller has them already."""
    xy, vertex_of, polygon_of = rings if rings is not None else flat_rings(geoms)
    a = np.flatnonzero(vertex_of[1:] == vertex_of[:-1])
    return np.vstack([xy[a, 1], xy[a, 0], xy[a + 1, 1], xy[a + 1, 0]]), polygon_of[vertex_of[a]]


def cut_pieces(seg: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments longer than ``PIECE_M`` cut into equal pieces along the same line (in degrees)."""
    ky, kx = metres_per_degree_array((seg[0] + seg[2]) * 0.5)
    length = np.hypot((seg[3] - seg[1]) * kx, (seg[2] - seg[0]) * ky)
    n = np.maximum(np.ceil(length / PIECE_M).astype(np.int64), 1)
    which = np.repeat(np.arange(seg.shape[1]), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    f0, f1 = k / n[which], (k + 1) / n[which]
    s = seg[:, which]
    lat0, lon0, lat1, lon1 = s
    pieces = np.vstack([lat0 + (lat1 - lat0) * f0, lon0 + (lon1 - lon0) * f0,
                        lat0 + (lat1 - lat0) * f1, lon0 + (lon1 - lon0) * f1])
    # The original vertices are kept exactly (no rounding from the interpolation).
    first, last = f0 == 0, f1 == 1
    pieces[:2, first] = s[:2, first]
    pieces[2:, last] = s[2:, last]
    return pieces, owner[which]
