"""The grids behind :class:`geodata.geofences.index.GeofenceIndex` (see its module docstring for
what a query does with them).

- :class:`PolygonGrid` — one uniform grid in degrees: per cell, the boundary
  pieces within reach (float32, in the cell's own flat plane), the polygons
  with a piece there ("mixed", with their boxes) and the polygons containing
  the whole cell ("interior");
- :class:`CircleGrid` — a small multi-level hash grid of circle boxes;
- helpers to expand boxes into cells and to convert metres to degrees, vectorised.

The rings the boundary pieces are cut from: :mod:`geodata.geofences.rings`.
"""

from __future__ import annotations

import ctypes
import math
from typing import NamedTuple

import numpy as np
import shapely

from geodata.geo import WGS84_A, WGS84_E2

_LEVEL_FACTOR = 8
_MAX_LEVELS = 8
# Entries processed at a time while building (bounds the temporary memory).
_CHUNK = 1 << 20
EMPTY_I = np.zeros(0, dtype=np.int64)
EMPTY_F = np.zeros(0)


def ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(start, stop)`` for every pair, without a Python loop."""
    counts = stops - starts
    total = int(counts.sum())
    if total == 0:
        return EMPTY_I
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total, dtype=np.int64)


def metres_per_degree_array(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`geodata.geo.metres_per_degree`, vectorised."""
    phi = np.radians(lat)
    w = 1.0 - WGS84_E2 * np.sin(phi) ** 2
    n = WGS84_A / np.sqrt(w)
    m = WGS84_A * (1 - WGS84_E2) / (w * np.sqrt(w))
    return np.radians(m), np.radians(n * np.cos(phi))


def degrees(metres: np.ndarray | float, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``metres`` in degrees of latitude and of longitude, the latter at a latitude ``metres`` poleward of ``lat``."""
    lat = np.asarray(lat, dtype=float)
    dlat = metres / metres_per_degree_array(lat)[0]
    poleward = np.minimum(np.abs(lat) + dlat, 89.9)
    return dlat, metres / metres_per_degree_array(poleward)[1]


def cells_of_boxes(lo_lon: np.ndarray, lo_lat: np.ndarray, hi_lon: np.ndarray, hi_lat: np.ndarray,
                   size: float, ncols: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (cell key, box number) pair for the cells of side ``size`` each box overlaps."""
    c0 = np.clip(np.floor((lo_lon + 180.0) / size).astype(np.int64), 0, ncols - 1)
    c1 = np.clip(np.floor((hi_lon + 180.0) / size).astype(np.int64), 0, ncols - 1)
    r0 = np.floor((lo_lat + 90.0) / size).astype(np.int64)
    r1 = np.floor((hi_lat + 90.0) / size).astype(np.int64)
    width = c1 - c0 + 1
    count = width * (r1 - r0 + 1)
    first = np.cumsum(count) - count
    k = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(first, count)
    width = np.repeat(width, count)
    keys = (np.repeat(r0, count) + k // width) * ncols + np.repeat(c0, count) + k % width
    return keys, np.repeat(np.arange(len(c0), dtype=np.int64), count)


def release_freed_memory() -> None:
    """Hand the build's freed temporaries back to the OS.

    glibc keeps freed mid-sized blocks in the heap, where the long-lived
    index arrays pin them: without this, a 100k-fence index holds ~300 MiB
    more than it uses. Elsewhere (no malloc_trim) this does nothing.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_starts(*columns: np.ndarray) -> np.ndarray:
    """Start of every run of equal rows in sorted columns."""
    change = np.zeros(len(columns[0]) - 1, dtype=bool) if len(columns[0]) else np.zeros(0, dtype=bool)
    for c in columns:
        change |= c[1:] != c[:-1]
    return np.concatenate(([0], np.flatnonzero(change) + 1)) if len(columns[0]) else EMPTY_I


class CircleGrid:
    """A multi-level hash grid of circle boxes: cell key → positions of the circles registered there."""

    __slots__ = ("levels",)

    def __init__(self, box: np.ndarray, items: np.ndarray, cell: float = 0.01, max_span: int = 3) -> None:
        """``box`` has rows ``[min_lon, min_lat, max_lon, max_lat]``; a circle goes to the finest level
        (cells of ``cell`` degrees, 8× coarser per level) where its box spans fewer than ``max_span`` cells."""
        self.levels: list[tuple[float, int, dict[int, np.ndarray]]] = []
        if len(items) == 0:
            return
        lo_lon, lo_lat, hi_lon, hi_lat = box
        level = np.full(len(items), _MAX_LEVELS - 1, dtype=np.int64)
        for k in range(_MAX_LEVELS - 1, -1, -1):
            size = cell * _LEVEL_FACTOR**k
            span = np.maximum(np.floor((hi_lon + 180.0) / size) - np.floor((lo_lon + 180.0) / size),
                              np.floor((hi_lat + 90.0) / size) - np.floor((lo_lat + 90.0) / size))
            level[span < max_span] = k
        for k in np.unique(level).tolist():
            size = cell * _LEVEL_FACTOR**k
            ncols = int(math.ceil(360.0 / size))
            sel = np.flatnonzero(level == k)
            keys, which = cells_of_boxes(lo_lon[sel], lo_lat[sel], hi_lon[sel], hi_lat[sel], size, ncols)
            owner = items[sel][which]
            order = np.lexsort((owner, keys))
            keys, owner = keys[order], owner[order]
            starts = run_starts(keys).tolist()
            stops = [*starts[1:], len(keys)]
            self.levels.append((size, ncols, {int(keys[s]): owner[s:e] for s, e in zip(starts, stops)}))

    def at(self, lat: float, lon: float) -> np.ndarray:
        """Circles registered in the cells that contain the point (each once)."""
        found = []
        for size, ncols, cells in self.levels:
            hit = cells.get(int((lat + 90.0) // size) * ncols + int((lon + 180.0) // size))
            if hit is not None:
                found.append(hit)
        if not found:
            return EMPTY_I
        return found[0] if len(found) == 1 else np.concatenate(found)

    def around(self, lat: float, lon: float, dlat: float, dlon: float) -> np.ndarray:
        """Circles registered in any cell that overlaps the box (lat ± dlat, lon ± dlon), each once."""
        found = []
        for size, ncols, cells in self.levels:
            r0, r1 = int((lat - dlat + 90.0) // size), int((lat + dlat + 90.0) // size)
            c0 = max(int((lon - dlon + 180.0) // size), 0)
            c1 = min(int((lon + dlon + 180.0) // size), ncols - 1)
            for r in range(r0, r1 + 1):
                for c in range(c0, c1 + 1):
                    hit = cells.get(r * ncols + c)
                    if hit is not None:
                        found.append(hit)
        return np.unique(np.concatenate(found)) if found else EMPTY_I


class Cell(NamedTuple):
    """One cell of a :class:`PolygonGrid`: slices of its flat arrays, and its plane."""

    start: int  # this cell's boundary pieces: [start, stop) of the per-entry arrays
    stop: int
    lat_c: float  # the plane's origin and scale (metres per degree)
    lon_c: float
    kx: float
    ky: float
    mixed_start: int  # polygons with a piece here: [mixed_start, mixed_stop) of PolygonGrid.mixed
    mixed_stop: int
    interior_start: int  # polygons containing the whole cell: [start, stop) of PolygonGrid.interior
    interior_stop: int


class PolygonGrid:
    """Polygon boundaries and interiors per cell (see :mod:`geodata.geofences.index` for how a query uses them)."""

    __slots__ = ("cell", "ncols", "cells", "pieces", "ax", "ay", "dx", "dy", "inv", "owner", "mixed", "mixed_box",
                 "interior")

    def __init__(self, pieces: np.ndarray, owner: np.ndarray, geoms: np.ndarray, box: np.ndarray,
                 reach_m: float, cell: float) -> None:
        self.cell = cell
        self.ncols = int(math.ceil(360.0 / cell))
        keys, piece = self._register(pieces, reach_m)
        entry_owner = owner[piece]
        n_entries = len(keys)
        # One block, its rows the per-entry arrays: the compiled query takes it as one argument.
        self.pieces = np.empty((5, n_entries), dtype=np.float32)
        self.ax, self.ay, self.dx, self.dy, self.inv = self.pieces
        for lo in range(0, n_entries, _CHUNK):
            self._project(pieces, keys[lo:lo + _CHUNK], piece[lo:lo + _CHUNK], lo)
        self.owner = entry_owner.astype(np.int32 if len(geoms) < 2**31 else np.int64)
        del piece
        # Mixed polygons: one per (cell, fence) run of pieces.
        runs = run_starts(keys, entry_owner)
        mixed_keys, mixed_owner = keys[runs], entry_owner[runs]
        interior_keys, interior_owner = self._interiors(geoms, box, mixed_keys, mixed_owner)
        del entry_owner, runs
        # Flat arrays and a dict of plain tuples: no small array per cell (memory, fragmentation).
        self.mixed = mixed_owner
        # float32, rounded outwards: a box never shrinks, so no polygon is skipped by the box test.
        mixed_box = box[:, mixed_owner]
        lo = mixed_box[:2].astype(np.float32)
        hi = mixed_box[2:].astype(np.float32)
        lo = np.where(lo > mixed_box[:2], np.nextafter(lo, np.float32(-np.inf)), lo)
        hi = np.where(hi < mixed_box[2:], np.nextafter(hi, np.float32(np.inf)), hi)
        self.mixed_box = np.ascontiguousarray(np.vstack([lo, hi]))
        del mixed_box, lo, hi
        self.interior = interior_owner
        bounds: dict[int, list[int]] = {}
        for slot, k in ((0, keys), (2, mixed_keys), (4, interior_keys)):
            starts = run_starts(k)
            for s, e in zip(starts.tolist(), [*starts[1:].tolist(), len(k)]):
                bounds.setdefault(int(k[s]), [0, 0, 0, 0, 0, 0])[slot:slot + 2] = (s, e)
        del keys, mixed_keys, interior_keys
        lat_c, lon_c, ky, kx = (a.tolist() for a in self._origins(np.array(list(bounds), dtype=np.int64)))
        # The query point is projected with the very same numbers as the pieces were.
        self.cells = {key: Cell(b[0], b[1], lat_c[i], lon_c[i], kx[i], ky[i], b[2], b[3], b[4], b[5])
                      for i, (key, b) in enumerate(zip(bounds, bounds.values()))}

    def _register(self, pieces: np.ndarray, reach_m: float) -> tuple[np.ndarray, np.ndarray]:
        """(cell key, piece) for every cell each piece's box grown by ``reach_m`` overlaps, sorted by both.

        Pieces are sorted by fence, so within a cell each fence's pieces form one run.
        """
        n = pieces.shape[1]
        n_cells = int(math.ceil(180.0 / self.cell) + 1) * self.ncols
        codes = []
        # In chunks, and as one sorted int64 code per pair: the build's peak memory stays low.
        for lo in range(0, n, _CHUNK // 4):
            lat_a, lon_a, lat_b, lon_b = pieces[:, lo:lo + _CHUNK // 4]
            lat_lo, lat_hi = np.minimum(lat_a, lat_b), np.maximum(lat_a, lat_b)
            pad_lat, pad_lon = degrees(reach_m, np.where(lat_hi > 0, lat_hi, lat_lo))
            keys, which = cells_of_boxes(np.minimum(lon_a, lon_b) - pad_lon, lat_lo - pad_lat,
                                         np.maximum(lon_a, lon_b) + pad_lon, lat_hi + pad_lat, self.cell, self.ncols)
            codes.append((keys, which + lo))
        if n_cells * max(n, 1) < 2**62:
            code = np.concatenate([k * n + w for k, w in codes]) if codes else EMPTY_I
            del codes
            code.sort()
            keys = code // max(n, 1)
            code -= keys * n
            return keys, code
        keys = np.concatenate([k for k, _ in codes])
        piece = np.concatenate([w for _, w in codes])
        order = np.lexsort((piece, keys))
        return keys[order], piece[order]

    def _origins(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each cell's centre and the metres per degree (latitude, longitude) there."""
        lat_c = (keys // self.ncols + 0.5) * self.cell - 90.0
        lon_c = (keys % self.ncols + 0.5) * self.cell - 180.0
        ky, kx = metres_per_degree_array(lat_c)
        return lat_c, lon_c, ky, kx

    def _project(self, pieces: np.ndarray, keys: np.ndarray, piece: np.ndarray, at: int) -> None:
        lat_c, lon_c, ky, kx = self._origins(keys)
        pa_lat, pa_lon, pb_lat, pb_lon = (row[piece] for row in pieces)
        dx, dy = (pb_lon - pa_lon) * kx, (pb_lat - pa_lat) * ky
        len2 = dx * dx + dy * dy
        out = slice(at, at + len(keys))
        self.ax[out] = (pa_lon - lon_c) * kx
        self.ay[out] = (pa_lat - lat_c) * ky
        self.dx[out], self.dy[out] = dx, dy
        # A zero-length piece gets t = 0 (its only point) instead of 0/0.
        self.inv[out] = np.divide(1.0, len2, out=np.zeros_like(len2), where=len2 > 0)

    def _interiors(self, geoms: np.ndarray, box: np.ndarray, mixed_keys: np.ndarray, mixed_owner: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(cell, polygon) for the cells a polygon contains entirely: inside its box, no piece of it in
        reach, centre inside."""
        if len(geoms) == 0:
            return EMPTY_I, EMPTY_I
        n = len(geoms)
        mixed_code = mixed_keys * n + mixed_owner
        found_keys, found_owner = [], []
        # Polygons in chunks, so that the (cell, polygon) pairs stay bounded in memory.
        cells = np.cumsum(((box[2] - box[0]) / self.cell + 2) * ((box[3] - box[1]) / self.cell + 2))
        edges = [0, *np.unique(np.searchsorted(cells, np.arange(_CHUNK, cells[-1], _CHUNK))).tolist(), n]
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi <= lo:
                continue
            keys, which = cells_of_boxes(box[0, lo:hi], box[1, lo:hi], box[2, lo:hi], box[3, lo:hi],
                                         self.cell, self.ncols)
            owner = which + lo
            free = ~np.isin(keys * n + owner, mixed_code)
            keys, owner = keys[free], owner[free]
            lat_c, lon_c, _, _ = self._origins(keys)
            inside = shapely.contains_xy(geoms[owner], lon_c, lat_c)
            found_keys.append(keys[inside])
            found_owner.append(owner[inside])
        keys = np.concatenate(found_keys) if found_keys else EMPTY_I
        owner = np.concatenate(found_owner) if found_owner else EMPTY_I
        order = np.lexsort((owner, keys))
        keys, owner = keys[order], owner[order]
        first = run_starts(keys, owner)
        return keys[first], owner[first]

    def cell_at(self, lat: float, lon: float) -> Cell | None:
        """The cell that contains the point, or None when no polygon is near it."""
        return self.cells.get(int((lat + 90.0) // self.cell) * self.ncols + int((lon + 180.0) // self.cell))

    def near(self, c: Cell, lat: float, lon: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """Polygons of cell ``c`` with a piece within ``margin`` (≤ reach) metres of the point, and that distance.

        One row per polygon, positions ascending.
        """
        s, e = c.start, c.stop
        if s == e:
            return EMPTY_I, EMPTY_F
        dx, dy = self.dx[s:e], self.dy[s:e]
        # Python floats (evaluate converts) are "weak" scalars: the arithmetic stays in float32.
        wx = (lon - c.lon_c) * c.kx - self.ax[s:e]
        wy = (lat - c.lat_c) * c.ky - self.ay[s:e]
        t = wx * dx
        t += wy * dy
        t *= self.inv[s:e]
        np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)
        wx -= t * dx
        wy -= t * dy
        wx *= wx
        wy *= wy
        wx += wy
        near = (wx <= margin * margin).nonzero()[0]
        if len(near) == 0:
            return EMPTY_I, EMPTY_F
        owner = self.owner[s:e].take(near)
        d = np.sqrt(wx.take(near).astype(np.float64))
        if owner[0] == owner[-1]:
            return owner[:1].astype(np.int64), d.min(keepdims=True)
        runs = np.concatenate(([0], np.flatnonzero(owner[1:] != owner[:-1]) + 1))
        return owner.take(runs).astype(np.int64), np.minimum.reduceat(d, runs)

    def near_many(self, cells: list[Cell | None], lats: np.ndarray, lons: np.ndarray, margins: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`near` for many points at once: (point, polygon, distance) rows sorted by point and polygon."""
        none = (0, 0, 0.0, 0.0, 0.0, 0.0)
        info = np.array([none if c is None else c[:6] for c in cells], dtype=float).reshape(len(cells), 6)
        s, e = info[:, 0].astype(np.int64), info[:, 1].astype(np.int64)
        idx = ranges(s, e)
        pid = np.repeat(np.arange(len(cells), dtype=np.int64), e - s)
        # The same float32 operations, in the same order, as near(): the same answers.
        px = ((lons - info[:, 3]) * info[:, 4]).astype(np.float32).take(pid)
        py = ((lats - info[:, 2]) * info[:, 5]).astype(np.float32).take(pid)
        dx, dy = self.dx.take(idx), self.dy.take(idx)
        wx = px - self.ax.take(idx)
        wy = py - self.ay.take(idx)
        t = wx * dx
        t += wy * dy
        t *= self.inv.take(idx)
        np.minimum(np.maximum(t, 0.0, out=t), 1.0, out=t)
        wx -= t * dx
        wy -= t * dy
        wx *= wx
        wy *= wy
        wx += wy
        near = (wx <= (margins * margins).astype(np.float32).take(pid)).nonzero()[0]
        if len(near) == 0:
            return EMPTY_I, EMPTY_I, EMPTY_F
        pid = pid.take(near)
        owner = self.owner.take(idx.take(near)).astype(np.int64)
        d = np.sqrt(wx.take(near).astype(np.float64))
        runs = run_starts(pid, owner)
        return pid.take(runs), owner.take(runs), np.minimum.reduceat(d, runs)
