"""``GeofenceIndex``: which geofences is a point in or near, and how far from their boundary.

One uniform grid in degrees (``cell_deg``, ~140 × 220 m at 52° N) answers a
query from the point's cell alone, whatever the number of fences:

- **boundary pieces.** Every polygon ring (outer rings and holes) is cut
  into pieces of at most ``rings.PIECE_M`` (100) metres. A piece is registered in every
  cell its box grown by ``reach_m`` overlaps, and stored *per cell*, in
  float32 metres of that cell's own flat plane, with its direction and
  inverse squared length precomputed: the distances from the point to all
  the pieces of its cell are ~20 NumPy operations on one contiguous slice.
  The nearest piece of each fence within the margin is its distance to the
  boundary;
- **inside.** A polygon with a piece in the cell ("mixed") is tested with
  shapely's vectorised ``contains_xy`` on prepared geometries, after a
  bounding-box test on a contiguous per-cell slice; a polygon whose boundary
  is out of reach of the whole cell but which contains the cell's centre
  contains the whole cell: such "interior" polygons are listed per cell at
  build time and need no test at all (their boundary is farther than the
  margin: ``signed_m = -inf``, see below);
- **circles** (few, up to 10 km wide) are in a small multi-level grid of
  their own and get an exact distance from the point to their centre minus
  the radius.

A margin past ``reach_m`` (a fix less precise than every fence's
hysteresis) searches the few neighbouring cells as well. ``evaluate_many``
does the same work for a batch of points in one pass of NumPy operations.

The work per query follows the boundary pieces and fences near the point,
not the number of fences nor the size of a polygon the point is deep inside
(a 10,000-vertex district costs the few pieces near the point).
bench/bench_geofences.py measures it against an STRtree design (boxes, then
every segment of each candidate) and against PostGIS.

Accuracy: a cell's plane is equirectangular at the cell's centre; within a
few hundred metres the distance error stays below 1 cm per 100 m at mid
latitudes (the scale varies by tan φ · Δφ across a cell). Circles use the
ellipsoidal mean-latitude plane of :mod:`geodata.geo` around their centre
(below a millimetre at 5 km). Inside/outside is exact (GEOS).

``signed_m = -inf`` means "inside, with the boundary farther than the margin
asked for"; :meth:`GeofenceIndex.signed_distance_m` gives the exact value.

The tables and grids are built by :mod:`geodata.geofences.build`.

With Numba, :meth:`GeofenceIndex.evaluate` does a point's cell in one
compiled call (:mod:`geodata.geofences.kernels`: the same float32 distances,
containment by ring crossings away from the boundary, GEOS within 1 cm of it).

Memory: ~25 bytes per (piece, cell) pair plus a few per (cell, polygon)
pair, and 16 bytes per vertex — 100,000 city fences (1.8 M pieces) take ~200 MiB. Limits: fences
crossing the antimeridian or containing a pole are not supported (the grid
works in plain degrees); the per-cell interior lists grow with a polygon's
area, which suits fences up to metropolitan size (~100 km across).
"""

from __future__ import annotations

import math
from typing import Iterable, NamedTuple

import numpy as np
import shapely

from geodata.geo import segment_distance2
from geodata import kernels
from geodata.geofences.build import build_circles, build_polygons
from geodata.geofences.grid import EMPTY_F, EMPTY_I, Cell, degrees, release_freed_memory, run_starts
from geodata.geofences.kernels import evaluate_cell
from geodata.geofences.model import DEFAULT_HYSTERESIS_M, Geofence
from geodata.geofences.rings import ring_segments

# Margin the index is built for at least: most fixes are more precise than this.
_MIN_REACH_M = 50.0
# Closer than this to a polygon's boundary, whether the polygon contains the point is left to GEOS (exact on
# the boundary itself); farther, counting ring crossings in float64 cannot be wrong.
_ASK_GEOS_WITHIN_M = 0.01


class Evaluation(NamedTuple):
    """Fences a point is inside or near: positions into ``GeofenceIndex.fences``, inside flags and
    signed geodesic distances to the boundary in metres (negative inside; ``-inf`` inside when
    the boundary is farther than the margin asked for)."""

    positions: np.ndarray
    inside: np.ndarray
    signed_m: np.ndarray


class Evaluations(NamedTuple):
    """:class:`Evaluation` for many points at once: one row per (point, fence), sorted by point."""

    point: np.ndarray
    positions: np.ndarray
    inside: np.ndarray
    signed_m: np.ndarray

    def for_point(self, i: int) -> Evaluation:
        """The rows of the ``i``-th point."""
        lo, hi = np.searchsorted(self.point, (i, i + 1)).tolist()
        return Evaluation(self.positions[lo:hi], self.inside[lo:hi], self.signed_m[lo:hi])


class GeofenceIndex:
    """An in-memory index over geofences (thousands to millions) for point evaluation."""

    def __init__(self, fences: Iterable[Geofence], *, reach_m: float | None = None, cell_deg: float = 0.002) -> None:
        """Build the index.

        ``reach_m`` is the largest margin answered from one cell (default:
        the largest hysteresis of the fences, at least 50 m); larger margins
        work too, on a slower path.
        """
        self.fences: list[Geofence] = list(fences)
        self.ids: list[str] = [f.id for f in self.fences]
        self._position = {fid: i for i, fid in enumerate(self.ids)}
        if len(self._position) != len(self.ids):
            seen: set[str] = set()
            dup = next(fid for fid in self.ids if fid in seen or seen.add(fid))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate geofence id {dup!r}")
        n = len(self.fences)
        self.hysteresis_m = np.array([f.hysteresis_m for f in self.fences], dtype=float)
        self.max_hysteresis_m = float(self.hysteresis_m.max()) if n else DEFAULT_HYSTERESIS_M
        self.reach_m = float(reach_m) if reach_m is not None else max(self.max_hysteresis_m, _MIN_REACH_M)
        self._radius = np.array([f.radius_m or 0.0 for f in self.fences], dtype=float)
        self._is_circle = np.array([f.radius_m is not None for f in self.fences], dtype=bool)
        self._depth = np.where(self._is_circle, self._radius, np.nan)
        self._geoms = np.empty(n, dtype=object)
        self._geoms[:] = [f.geometry for f in self.fences]
        self._centres, self._plane, self._circles = build_circles(self._geoms, self._is_circle, self._radius,
                                                                  self.reach_m)
        self._rings, self._bounds, self._grid = build_polygons(self._geoms, self._is_circle, self.reach_m, cell_deg)
        release_freed_memory()

    def __len__(self) -> int:
        return len(self.fences)

    def __contains__(self, fence_id: object) -> bool:
        return fence_id in self._position

    def position(self, fence_id: str) -> int | None:
        """The position of a fence in :attr:`fences`, or None when it is not indexed."""
        return self._position.get(fence_id)

    def get(self, fence_id: str) -> Geofence | None:
        """The fence with this id, or None."""
        pos = self._position.get(fence_id)
        return None if pos is None else self.fences[pos]

    # -- query ---------------------------------------------------------------

    def evaluate(self, lat: float, lon: float, margin_m: float | None = None) -> Evaluation:
        """Fences the point is inside, or outside by at most ``margin_m`` metres (default :attr:`reach_m`).

        Geometry only: schedules are not looked at (see :meth:`Geofence.is_active`).
        """
        lat, lon = float(lat), float(lon)
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise ValueError(f"({lat}, {lon}) is not a latitude, longitude pair")
        margin = self.reach_m if margin_m is None else float(margin_m)
        cell = self._grid.cell_at(lat, lon)
        if cell is not None and margin <= self.reach_m and kernels.enabled():
            compiled = self._evaluate_compiled(cell, lat, lon, margin)
            if compiled is not None:
                return compiled
        if margin <= self.reach_m:
            owner, dist = (EMPTY_I, EMPTY_F) if cell is None else self._grid.near(cell, lat, lon, margin)
            circles = self._circles.at(lat, lon) if self._circles.levels else EMPTY_I
        else:
            owner, dist = self._near_far(lat, lon, margin)
            dlat, dlon = (float(x[0]) for x in degrees(margin - self.reach_m, np.array([lat])))
            circles = self._circles.around(lat, lon, dlat, dlon)
        if len(circles):
            d = self._circle_signed(lat, lon, circles)
            keep = d <= margin
            if keep.any():
                owner = np.concatenate([owner, circles[keep]])
                dist = np.concatenate([dist, d[keep]])
        if cell is None:
            return Evaluation(owner, dist < 0, dist)
        grid = self._grid
        ms, me = cell.mixed_start, cell.mixed_stop
        mixed = EMPTY_I
        if ms < me:
            # Boxes first, from one small contiguous slice: most mixed polygons' boxes miss the point.
            b = grid.mixed_box[:, ms:me]
            test = ((b[0] <= lon) & (lon <= b[2]) & (b[1] <= lat) & (lat <= b[3])).nonzero()[0]
            if len(test):
                mixed = grid.mixed[ms:me].take(test)
                mixed = mixed[shapely.contains_xy(self._geoms.take(mixed), lon, lat)]
        return self._merge(owner, dist, mixed, grid.interior[cell.interior_start:cell.interior_stop])

    @staticmethod
    def _merge(owner: np.ndarray, dist: np.ndarray, mixed: np.ndarray, interior: np.ndarray) -> Evaluation:
        """The evaluation from the fences near the point and the polygons containing it."""
        if len(mixed) == 0 and len(interior) == 0:
            # A circle's distance carries its sign; a polygon that does not contain the point is outside.
            return Evaluation(owner, dist < 0, dist)
        # Few fences per point: merging in Python beats NumPy set operations here. Interior polygons
        # have no piece within reach; with a margin past reach they may have one within the margin.
        containing = set(mixed.tolist())
        containing.update(interior.tolist())
        positions = owner.tolist()
        distances = dist.tolist()
        inside = [p in containing or d < 0 for p, d in zip(positions, distances)]
        signed = [-d if p in containing else d for p, d in zip(positions, distances)]
        deep = sorted(containing.difference(positions))
        return Evaluation(np.array(positions + deep, dtype=np.int64), np.array(inside + [True] * len(deep)),
                          np.array(signed + [-math.inf] * len(deep)))

    def _evaluate_compiled(self, cell: Cell, lat: float, lon: float, margin: float) -> Evaluation | None:
        """:meth:`evaluate` within reach, for a point in a cell with polygons, in one compiled call.

        None when the point is within a centimetre of a polygon's boundary
        (GEOS decides those: the array path).
        """
        extra_owner, extra_dist = EMPTY_I, EMPTY_F
        if self._circles.levels:
            circles = self._circles.at(lat, lon)
            if len(circles):
                d = self._circle_signed(lat, lon, circles)
                keep = d <= margin
                extra_owner, extra_dist = circles[keep], d[keep]
        positions, inside, signed, unsure = evaluate_cell(self._grid, self._rings, cell, lat, lon, margin,
                                                          extra_owner, extra_dist, _ASK_GEOS_WITHIN_M)
        return None if unsure else Evaluation(positions, inside, signed)

    def _near_far(self, lat: float, lon: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Polygons with a boundary piece within ``margin`` (past reach) metres of the point.

        A piece within the margin is within reach of some point at most
        ``margin - reach`` from the query point, so it is registered in one of
        the cells overlapping that box: each of them is searched in its own
        plane, and the nearest piece per polygon kept.
        """
        dlat, dlon = (float(x[0]) for x in degrees(margin - self.reach_m, np.array([lat])))
        grid = self._grid
        size, ncols = grid.cell, grid.ncols
        owners, dists = [], []
        for r in range(int((lat - dlat + 90.0) // size), int((lat + dlat + 90.0) // size) + 1):
            for c in range(max(int((lon - dlon + 180.0) // size), 0),
                           min(int((lon + dlon + 180.0) // size), ncols - 1) + 1):
                hit = grid.cells.get(r * ncols + c)
                if hit is not None:
                    owner, dist = grid.near(hit, lat, lon, margin)
                    owners.append(owner)
                    dists.append(dist)
        if not owners:
            return EMPTY_I, EMPTY_F
        owner, dist = np.concatenate(owners), np.concatenate(dists)
        order = np.lexsort((dist, owner))
        first = run_starts(owner.take(order))
        return owner.take(order).take(first), dist.take(order).take(first)

    def _circle_signed(self, lat: float | np.ndarray, lon: float | np.ndarray, circles: np.ndarray) -> np.ndarray:
        """Distance from the point(s) to the circles' centres minus their radii.

        In the mean-latitude plane of each centre (:func:`geodata.geo.plane_coefficients`,
        precomputed per circle).
        """
        centre = self._centres.take(circles, axis=1)
        a, b, c, d = self._plane.take(circles, axis=1)
        dlat = lat - centre[0]
        dlon = lon - centre[1]
        return np.hypot((a + b * dlat) * dlon, (c + d * dlat) * dlat) - self._radius.take(circles)

    def evaluate_many(self, lats: np.ndarray, lons: np.ndarray, margins_m: np.ndarray | float | None = None
                      ) -> Evaluations:
        """:meth:`evaluate` for many points in one pass: the same answers, a fraction of the cost per point.

        Meant for a batch of fixes: evaluate them all, then run each user's
        state machine over its own rows (:meth:`Evaluations.for_point`).
        """
        lats = np.asarray(lats, dtype=float).ravel()
        lons = np.asarray(lons, dtype=float).ravel()
        if not (np.all((lats >= -90.0) & (lats <= 90.0)) and np.all((lons >= -180.0) & (lons <= 180.0))):
            raise ValueError("latitudes must be within -90..90 and longitudes within -180..180")
        n_points = len(lats)
        margins = np.broadcast_to(np.asarray(self.reach_m if margins_m is None else margins_m, dtype=float),
                                  (n_points,)).copy()
        if kernels.enabled():
            # The compiled evaluation of one point (~20 µs) beats this pass's array operations per point.
            return self._evaluate_each(lats, lons, margins)
        far = margins > self.reach_m
        cells = [None if f else self._grid.cell_at(la, lo)
                 for la, lo, f in zip(lats.tolist(), lons.tolist(), far.tolist())]
        pid, own, dist = self._grid.near_many(cells, lats, lons, margins)
        n = max(len(self.fences), 1)
        keys, dists = [pid * n + own], [dist]
        if self._circles.levels:
            found = [EMPTY_I if f else self._circles.at(la, lo)
                     for la, lo, f in zip(lats.tolist(), lons.tolist(), far.tolist())]
            cp = np.repeat(np.arange(n_points, dtype=np.int64), [len(x) for x in found])
            cc = np.concatenate(found) if found else EMPTY_I
            if len(cc):
                d = self._circle_signed(lats.take(cp), lons.take(cp), cc)
                keep = d <= margins.take(cp)
                keys.append(cp[keep] * n + cc[keep])
                dists.append(d[keep])
        grid = self._grid
        mixed = [EMPTY_I if c is None else grid.mixed[c.mixed_start:c.mixed_stop] for c in cells]
        interior = [EMPTY_I if c is None else grid.interior[c.interior_start:c.interior_stop] for c in cells]
        mp = np.repeat(np.arange(n_points, dtype=np.int64), [len(x) for x in mixed])
        mm = np.concatenate(mixed) if mixed else EMPTY_I
        if len(mm):
            x, y = lons.take(mp), lats.take(mp)
            b = self._bounds.take(mm, axis=1)
            test = np.flatnonzero((b[0] <= x) & (x <= b[2]) & (b[1] <= y) & (y <= b[3]))
            # Tests grouped by polygon keep each polygon's data in the CPU cache (several times faster).
            test = test.take(np.argsort(mm.take(test), kind="stable"))
            hit = test[shapely.contains_xy(self._geoms.take(mm.take(test)), x.take(test), y.take(test))]
        else:
            hit = EMPTY_I
        ip = np.repeat(np.arange(n_points, dtype=np.int64), [len(x) for x in interior])
        ii = np.concatenate(interior) if interior else EMPTY_I
        contained = np.concatenate([mp.take(hit) * n + mm.take(hit), ip * n + ii])
        key = np.concatenate(keys)
        d = np.concatenate(dists)
        is_contained = np.isin(key, contained)
        deep = contained[~np.isin(contained, key)]
        key = np.concatenate([key, deep])
        signed = np.concatenate([np.where(is_contained, -d, d), np.full(len(deep), -np.inf)])
        inside = np.concatenate([is_contained | (d < 0), np.ones(len(deep), dtype=bool)])
        point, positions = key // n, key % n
        for i in np.flatnonzero(far).tolist():
            ev = self.evaluate(float(lats[i]), float(lons[i]), float(margins[i]))
            point = np.concatenate([point, np.full(len(ev.positions), i, dtype=np.int64)])
            positions = np.concatenate([positions, ev.positions])
            inside = np.concatenate([inside, ev.inside])
            signed = np.concatenate([signed, ev.signed_m])
        order = np.lexsort((positions, point))
        return Evaluations(point[order], positions[order], inside[order], signed[order])

    def _evaluate_each(self, lats: np.ndarray, lons: np.ndarray, margins: np.ndarray) -> Evaluations:
        """:meth:`evaluate_many` as one :meth:`evaluate` per point, in the same row order."""
        found = [self.evaluate(la, lo, m) for la, lo, m in zip(lats.tolist(), lons.tolist(), margins.tolist())]
        if not found:
            return Evaluations(EMPTY_I, EMPTY_I, np.zeros(0, dtype=bool), EMPTY_F)
        point = np.repeat(np.arange(len(found), dtype=np.int64), [len(ev.positions) for ev in found])
        positions = np.concatenate([ev.positions for ev in found])
        inside = np.concatenate([ev.inside for ev in found])
        signed = np.concatenate([ev.signed_m for ev in found])
        order = np.lexsort((positions, point))
        return Evaluations(point[order], positions[order], inside[order], signed[order])

    def containing(self, lat: float, lon: float) -> list[str]:
        """Ids of the fences whose area contains the point (geometry only, schedules ignored)."""
        ev = self.evaluate(lat, lon, 0.0)
        return [self.ids[p] for p in ev.positions[ev.inside].tolist()]

    def signed_distance_m(self, position: int, lat: float, lon: float) -> float:
        """Exact signed geodesic distance from the point to the boundary of the fence at ``position``."""
        if self._is_circle[position]:
            return float(self._circle_signed(lat, lon, np.array([position]))[0])
        geom = self._geoms[position]
        d = math.sqrt(float(segment_distance2(lat, lon, ring_segments(np.array([geom]))[0]).min()))
        return -d if shapely.contains_xy(geom, lon, lat) else d

    def depth_m(self, position: int) -> float:
        """How deep (metres from the boundary) a point can be inside the fence at ``position``.

        A circle's radius; for a polygon the distance from the centre of its
        maximum inscribed circle to the boundary, computed on first use.
        """
        depth = self._depth[position]
        if depth == depth:
            return float(depth)
        geom = self._geoms[position]
        xmin, ymin, xmax, ymax = geom.bounds
        circle = shapely.maximum_inscribed_circle(geom, tolerance=max(xmax - xmin, ymax - ymin) / 200.0)
        lon, lat = shapely.get_coordinates(circle)[0]
        depth = -self.signed_distance_m(position, float(lat), float(lon))
        # Concurrent first uses compute the same value: the unsynchronised write is harmless.
        self._depth[position] = max(depth, 0.0)
        return float(self._depth[position])
