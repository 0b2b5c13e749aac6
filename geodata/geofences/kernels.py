"""One cell's share of a geofence evaluation, compiled with Numba.

:meth:`GeofenceIndex.evaluate <geodata.geofences.index.GeofenceIndex.evaluate>`
with NumPy costs ~25 array calls per point for the boundary pieces of the
point's cell and the box test of its mixed polygons; one point has a few
dozen pieces, so the calls, not the data, are the time (~100 µs per point).
:func:`cell_near` does both in one compiled pass with the same float32
arithmetic, in the same order, as :meth:`PolygonGrid.near
<geodata.geofences.grid.PolygonGrid.near>`: the same distances to the bit.
Containment stays with shapely (exact, GEOS) on the few candidates it returns.

Numba is loaded on the first call; without it (or with ``NUMBA_DISABLE_JIT``)
the index keeps its NumPy path (:func:`geodata.kernels.enabled`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


def _cell_near(pieces, owner, mixed, mixed_box, start, stop, mixed_start, mixed_stop, lat_c, lon_c, kx, ky,
               lat, lon, margin):
    """(polygons with a piece within the margin, their distance, mixed polygons whose box holds the point)."""
    # The point is projected and compared as the NumPy path does: float64 arithmetic, then float32.
    px = np.float32((lon - lon_c) * kx)
    py = np.float32((lat - lat_c) * ky)
    margin2 = np.float32(margin * margin)
    out_owner = np.empty(stop - start, dtype=np.int64)
    out_dist = np.empty(stop - start, dtype=np.float64)
    n = 0
    zero, one = np.float32(0.0), np.float32(1.0)
    for i in range(start, stop):
        dx, dy = pieces[2, i], pieces[3, i]
        wx = px - pieces[0, i]
        wy = py - pieces[1, i]
        t = (wx * dx + wy * dy) * pieces[4, i]
        if t < zero:
            t = zero
        elif t > one:
            t = one
        wx = wx - t * dx
        wy = wy - t * dy
        d2 = wx * wx + wy * wy
        if d2 <= margin2:
            o = owner[i]
            d = np.sqrt(np.float64(d2))
            if n > 0 and out_owner[n - 1] == o:
                if d < out_dist[n - 1]:
                    out_dist[n - 1] = d
            else:
                out_owner[n] = o
                out_dist[n] = d
                n += 1
    lon32, lat32 = np.float32(lon), np.float32(lat)
    candidates = np.empty(mixed_stop - mixed_start, dtype=np.int64)
    k = 0
    for j in range(mixed_start, mixed_stop):
        if mixed_box[0, j] <= lon32 and lon32 <= mixed_box[2, j] and mixed_box[1, j] <= lat32 \
                and lat32 <= mixed_box[3, j]:
            candidates[k] = mixed[j]
            k += 1
    return out_owner[:n], out_dist[:n], candidates[:k]


def _merge(owner, dist, containing, interior):
    """The evaluation's rows: fences near the point (inside when containing it, or a circle's distance < 0),
    then the containing polygons with no boundary near (``-inf``), ascending."""
    inside_set = set()
    for p in containing:
        inside_set.add(p)
    for p in interior:
        inside_set.add(p)
    near_set = set()
    for p in owner:
        near_set.add(p)
    deep = sorted([p for p in inside_set if p not in near_set])
    n, m = len(owner), len(deep)
    positions = np.empty(n + m, dtype=np.int64)
    inside = np.empty(n + m, dtype=np.bool_)
    signed = np.empty(n + m, dtype=np.float64)
    for i in range(n):
        p, d = owner[i], dist[i]
        contained = p in inside_set
        positions[i] = p
        inside[i] = contained or d < 0
        signed[i] = -d if contained else d
    for j in range(m):
        positions[n + j] = deep[j]
        inside[n + j] = True
        signed[n + j] = -np.inf
    return positions, inside, signed


ASK_GEOS = 2


def _contained(candidates, owner, dist, xy, ring_start, fence_rings, lon, lat, exact_within_m):
    """Per candidate polygon: 1 contains the point, 0 does not, ``ASK_GEOS`` too close to its boundary to say.

    Even-odd crossings over all the polygon's rings (outer rings, holes, every
    part): exact away from the boundary. A point within ``exact_within_m`` of
    the boundary (the distances the cell pass measured) is left to GEOS, which
    decides the boundary itself (``contains`` excludes it) robustly.
    """
    out = np.empty(len(candidates), dtype=np.int8)
    for c in range(len(candidates)):
        p = candidates[c]
        close = False
        for i in range(len(owner)):
            if owner[i] == p and dist[i] <= exact_within_m:
                close = True
        if close:
            out[c] = ASK_GEOS
            continue
        inside = False
        for r in range(fence_rings[0, p], fence_rings[1, p]):
            for k in range(ring_start[r], ring_start[r + 1] - 1):
                xi, yi = xy[k, 0], xy[k, 1]
                xj, yj = xy[k + 1, 0], xy[k + 1, 1]
                if (yi > lat) != (yj > lat):
                    if lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
                        inside = not inside
        out[c] = 1 if inside else 0
    return out


def _evaluate_cell(pieces, owner, mixed, mixed_box, interior, xy, ring_start, fence_rings, start, stop,
                   mixed_start, mixed_stop, interior_start, interior_stop, lat_c, lon_c, kx, ky, lat, lon, margin,
                   extra_owner, extra_dist, exact_within_m):
    """A whole evaluation in a cell: (positions, inside, signed metres, False), or (…, True) when a polygon's
    boundary is too close to the point to count crossings (the caller asks GEOS then)."""
    near_owner, near_dist, candidates = _cell_near(pieces, owner, mixed, mixed_box, start, stop, mixed_start,
                                                   mixed_stop, lat_c, lon_c, kx, ky, lat, lon, margin)
    if len(extra_owner):
        near_owner = np.concatenate((near_owner, extra_owner))
        near_dist = np.concatenate((near_dist, extra_dist))
    verdict = _contained(candidates, near_owner, near_dist, xy, ring_start, fence_rings, lon, lat, exact_within_m)
    containing = np.empty(len(candidates), dtype=np.int64)
    k = 0
    for c in range(len(candidates)):
        if verdict[c] == ASK_GEOS:
            return near_owner, near_dist < 0, near_dist, True
        if verdict[c] == 1:
            containing[k] = candidates[c]
            k += 1
    positions, inside, signed = _merge(near_owner, near_dist, containing[:k], interior[interior_start:interior_stop])
    return positions, inside, signed, False


_compiled: Callable[..., Any] | None = None


def _compile() -> Callable[..., Any]:
    from numba import njit

    global _cell_near, _contained, _merge
    jit = njit(cache=True, nogil=True)
    _cell_near, _contained, _merge = jit(_cell_near), jit(_contained), jit(_merge)
    return jit(_evaluate_cell)


def evaluate_cell(grid: Any, rings: Any, cell: Any, lat: float, lon: float, margin: float,
                  extra_owner: np.ndarray, extra_dist: np.ndarray, exact_within_m: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """:func:`_evaluate_cell` compiled (on the first call in a process)."""
    global _compiled
    if _compiled is None:
        _compiled = _compile()
    return _compiled(grid.pieces, grid.owner, grid.mixed, grid.mixed_box, grid.interior, rings[0], rings[1],
                     rings[2], cell.start, cell.stop, cell.mixed_start, cell.mixed_stop, cell.interior_start,
                     cell.interior_stop, cell.lat_c, cell.lon_c, cell.kx, cell.ky, lat, lon, margin, extra_owner,
                     extra_dist, exact_within_m)
