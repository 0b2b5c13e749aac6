"""In-memory spatial index over spots whose query cost follows the hits, not the layer.

Structure: a multi-level uniform grid in degrees. A spot goes to the finest
level whose cell is at least as large as its bounding box (points, curb
segments and lots up to ~150 m: level 0, cells of ``cell_deg``), keyed by the
cell of its bbox centre. All per-spot arrays are stored sorted by one
composite (level, cell) key, so one row of cells in a query window is one
contiguous slice, and the rows of every level are found with two binary
searches in all; the window is the query circle's bbox grown by the largest
half extent of that level's spots. Candidates then get an exact geodesic
distance (:mod:`geodata.geo`, vectorised over their segments; 0 inside a
polygon, found with an STR-tree of the polygons) and are cut at the radius.

A query costs a fixed number of NumPy calls (about 40 with :mod:`geodata.search`)
plus work proportional to the candidates, so the call overhead (~1-2 µs each)
dominates at city densities: the defaults keep the number of calls low
rather than the candidates few (see BENCHMARKS.md).

The index also precomputes what :mod:`geodata.search` filters on (fit limits
per spot, one compiled :class:`~geodata.allowed.RuleSet` per distinct rule
list and time zone), so a search is a few NumPy passes over the hits.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import shapely

from geodata import kernels
from geodata.allowed import RuleSet
from geodata.fit import DEFAULT_FIT, FitConfig, is_parallel_curb, max_length_m
from geodata.geo import metres_per_degree, point_distance2, segment_distance2
from geodata.model import Spot

_LEVEL_FACTOR = 4
_MAX_LEVELS = 8
# Composite sort key: level * _LEVEL_STRIDE + cell key (cell keys stay below 2**50 for any cell ≥ 1e-5°).
_LEVEL_STRIDE = 1 << 50
# Default level-0 cell: ~220 m × 135 m at 52°N. Lots up to ~150 m stay on level 0 (one level to search),
# and a 300 m query reads about 5 rows of cells.
DEFAULT_CELL_DEG = 0.002


class Hits(NamedTuple):
    """Spots near a point: positions into ``SpotIndex.spots`` and geodesic distances in metres."""

    positions: np.ndarray
    distances_m: np.ndarray


class _Level:
    __slots__ = ("cell", "ncols", "nrows", "base", "pad_lat", "pad_lon")

    def __init__(self, level: int, cell: float, pad_lat: float, pad_lon: float) -> None:
        self.cell = cell
        self.ncols = int(math.ceil(360.0 / cell))
        self.nrows = int(math.ceil(180.0 / cell)) + 1
        self.base = level * _LEVEL_STRIDE
        self.pad_lat = pad_lat
        self.pad_lon = pad_lon


def _ranges_counted(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``arange(start, start + count)`` for every pair, concatenated; and where each range begins in it."""
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    firsts = ends - counts
    if total == 0:
        return np.empty(0, dtype=np.int64), firsts
    return np.repeat(starts - firsts, counts) + np.arange(total, dtype=np.int64), firsts


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(start, stop)`` for every pair, without a Python loop."""
    return _ranges_counted(starts, stops - starts)[0]


class SpotIndex:
    """A grid index over spots (up to millions) for radius queries with geodesic distances."""

    def __init__(
        self,
        spots: Iterable[Spot],
        *,
        ids: Sequence[str] | None = None,
        cell_deg: float = DEFAULT_CELL_DEG,
        fit_config: FitConfig = DEFAULT_FIT,
        timezones: Mapping[str, str] | None = None,
        default_timezone: str = "UTC",
        countries: Mapping[str, str] | None = None,
    ) -> None:
        """Build the index.

        ``ids`` are the public ids returned by searches (default: source
        feature id, else position). ``timezones``/``countries`` map a spot's
        ``source_dataset`` to its IANA zone and ISO country (public holidays).
        """
        spot_list = list(spots)
        id_list = list(ids) if ids is not None else [
            s.source_feature_id if s.source_feature_id is not None else str(i) for i, s in enumerate(spot_list)
        ]
        if len(id_list) != len(spot_list):
            raise ValueError("ids and spots differ in length")
        self.fit_config = fit_config
        self.cell_deg = cell_deg
        n = len(spot_list)
        geoms = np.empty(n, dtype=object)
        geoms[:] = [s.geometry for s in spot_list]
        bounds = shapely.bounds(geoms).reshape(n, 4) if n else np.zeros((0, 4))
        level, key = self._cells(bounds, cell_deg)
        order = np.lexsort((key, level)) if n else np.zeros(0, dtype=np.int64)
        self.spots: list[Spot] = [spot_list[i] for i in order]
        self.ids: list[str] = [id_list[i] for i in order]
        self._geoms = geoms[order]
        bounds, level, key = bounds[order], level[order], key[order]
        self._levels = self._build_levels(bounds, level, cell_deg)
        self._keys = level * _LEVEL_STRIDE + key
        self._build_segments()
        self._build_attributes(timezones or {}, default_timezone, countries or {})
        self._build_kernel_arrays()
        # (start, duration) -> that stay's rule-list states and decisions, kept by geodata.search (bounded there).
        self.decision_cache: dict = {}
        # (spot, vehicle) -> the fit reasons of a result, kept by geodata.search (bounded there).
        self.fit_reasons: dict = {}
        # Pieces of the answer's JSON text, kept by geodata.answer_json (bounded there): per spot, and per
        # vehicle and spot (the fit reasons).
        self.item_json: dict = {}
        self.fit_json: dict = {}

    def __len__(self) -> int:
        return len(self.spots)

    # -- build ---------------------------------------------------------------

    @staticmethod
    def _cells(bounds: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
        extent = np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1])
        level = np.zeros(len(bounds), dtype=np.int64)
        for k in range(1, _MAX_LEVELS):
            level[extent > cell * _LEVEL_FACTOR ** (k - 1)] = k
        size = cell * np.power(float(_LEVEL_FACTOR), level)
        cx = (bounds[:, 0] + bounds[:, 2]) * 0.5
        cy = (bounds[:, 1] + bounds[:, 3]) * 0.5
        ncols = np.ceil(360.0 / size).astype(np.int64)
        col = np.clip(np.floor((cx + 180.0) / size).astype(np.int64), 0, ncols - 1)
        row = np.floor((cy + 90.0) / size).astype(np.int64)
        return level, row * ncols + col

    @staticmethod
    def _build_levels(bounds: np.ndarray, level: np.ndarray, cell: float) -> list[_Level]:
        levels = []
        for k in np.unique(level):
            lo, hi = np.searchsorted(level, [k, k + 1])
            half_lat = (bounds[lo:hi, 3] - bounds[lo:hi, 1]) * 0.5
            half_lon = (bounds[lo:hi, 2] - bounds[lo:hi, 0]) * 0.5
            size = cell * _LEVEL_FACTOR ** int(k)
            levels.append(_Level(int(k), size, float(half_lat.max()), float(half_lon.max())))
        return levels

    def _build_segments(self) -> None:
        geoms = self._geoms
        n = len(geoms)
        kinds = shapely.get_type_id(geoms) if n else np.zeros(0, dtype=np.int64)
        self._is_polygon = (kinds == 3) | (kinds == 6)
        self._has_polygons = bool(self._is_polygon.any())
        # Is the query point inside a polygon? One STR-tree lookup per query instead of a test per candidate.
        self._polygon_pos = np.flatnonzero(self._is_polygon)
        self._polygon_tree = shapely.STRtree(geoms[self._polygon_pos]) if self._has_polygons else None
        self._all_points = bool(np.all(kinds == 0))
        if self._all_points:
            xy = shapely.get_coordinates(geoms) if n else np.zeros((0, 2))
            # Rows [lats, lons]: gathering columns with take() is several times faster than rows.
            self._points = np.ascontiguousarray(xy[:, ::-1].T)
            return
        # Lines and polygon rings become segments; a point is one zero-length segment.
        parts, part_owner = shapely.get_parts(geoms, return_index=True)
        poly = shapely.get_type_id(parts) == 3
        rings, ring_of = shapely.get_rings(parts[poly], return_index=True)
        pieces = np.concatenate([parts[~poly], rings])
        owner = np.concatenate([part_owner[~poly], part_owner[poly][ring_of]])
        xy, piece_of = shapely.get_coordinates(pieces, return_index=True)
        is_point = (shapely.get_type_id(pieces) == 0)[piece_of]
        seg_a = np.flatnonzero(piece_of[1:] == piece_of[:-1])
        pts = np.flatnonzero(is_point)
        a = np.concatenate([seg_a, pts])
        b = np.concatenate([seg_a + 1, pts])
        seg_owner = owner[piece_of[a]]
        order = np.argsort(seg_owner, kind="stable")
        a, b, seg_owner = a[order], b[order], seg_owner[order]
        self._segments = np.vstack([xy[a, 1], xy[a, 0], xy[b, 1], xy[b, 0]])
        counts = np.bincount(seg_owner, minlength=n)
        self._one_segment = bool(np.all(counts == 1))
        self._seg_count = counts
        self._seg_start = np.cumsum(counts) - counts
        # Per spot, the first of its segments; one past the last at the end (a row of spots = a row of segments).
        self._seg_bounds = np.append(self._seg_start, len(a))
        self._seg_owner = seg_owner
        self._seg_is_first = np.zeros(len(a), dtype=bool)
        self._seg_is_first[self._seg_start[counts > 0]] = True

    def _build_attributes(self, timezones: Mapping[str, str], default_tz: str, countries: Mapping[str, str]) -> None:
        n = len(self.spots)
        inf = math.inf
        cfg = self.fit_config
        self.max_len = np.empty(n)
        self.max_width = np.empty(n)
        self.max_height = np.empty(n)
        self.max_weight = np.empty(n)
        self.parallel_curb = np.zeros(n, dtype=bool)
        self.length = np.full(n, np.nan)
        self.capacity = np.full(n, np.nan)
        self.ruleset_id = np.empty(n, dtype=np.int32)
        self.rulesets: list[RuleSet] = []
        by_key: dict = {}
        by_identity: dict = {}
        for i, s in enumerate(self.spots):
            self.max_len[i] = max_length_m(s, cfg)
            self.max_width[i] = inf if s.max_vehicle_width_m is None else s.max_vehicle_width_m
            self.max_height[i] = inf if s.max_vehicle_height_m is None else s.max_vehicle_height_m
            self.max_weight[i] = inf if s.max_vehicle_weight_kg is None else s.max_vehicle_weight_kg
            if is_parallel_curb(s, cfg):
                self.parallel_curb[i] = True
            if s.length_m is not None:
                self.length[i] = s.length_m
            if s.capacity is not None:
                self.capacity[i] = s.capacity
            tz = timezones.get(s.source_dataset or "", default_tz)
            country = countries.get(s.source_dataset or "")
            # Interned rule tuples are shared, so identity finds most rule lists without hashing them.
            ident = (id(s.rules), tz, country)
            hit = by_identity.get(ident)
            if hit is None or hit[0] is not s.rules:
                key = (s.rules, tz, country)
                rs = by_key.get(key)
                if rs is None:
                    rs = by_key[key] = len(self.rulesets)
                    self.rulesets.append(RuleSet(s.rules, tz, country))
                hit = by_identity[ident] = (s.rules, rs)
            self.ruleset_id[i] = hit[1]
        never = np.array([rs.never for rs in self.rulesets], dtype=bool)
        self.never = never[self.ruleset_id] if n else np.zeros(0, dtype=bool)
        # What search() compares in one go, one row per spot: the longest vehicle that fits (-inf where no
        # rule ever lets the public park), width, height, weight limits.
        self.fit_limits = np.ascontiguousarray(
            np.column_stack([np.where(self.never, -inf, self.max_len), self.max_width, self.max_height,
                             self.max_weight]) if n else np.zeros((0, 4)))

    def _build_kernel_arrays(self) -> None:
        """What :func:`geodata.kernels.nearest_allowed` reads: levels as rows, every spot as segments."""
        self._kernel_levels = np.array(
            [[lv.cell, lv.ncols, lv.nrows, lv.base, lv.pad_lat, lv.pad_lon] for lv in self._levels],
            dtype=np.float64).reshape(len(self._levels), 6)
        n = len(self.spots)
        if self._all_points:
            # A point is a zero-length segment: one loop serves every layer.
            self._kernel_segments = np.ascontiguousarray(np.vstack([self._points, self._points]))
            self._kernel_seg_bounds = np.arange(n + 1, dtype=np.int64)
        else:
            self._kernel_segments = np.ascontiguousarray(self._segments)
            self._kernel_seg_bounds = self._seg_bounds.astype(np.int64)

    # -- query ---------------------------------------------------------------

    @staticmethod
    def _window(lat: float, radius_m: float) -> tuple[float, float]:
        """Half sizes (degrees of latitude, of longitude) of the query circle's bounding box."""
        m_lat, _ = metres_per_degree(lat)
        dlat = radius_m / m_lat
        lat0, lat1 = max(lat - dlat, -90.0), min(lat + dlat, 90.0)
        _, m_lon = metres_per_degree(max(abs(lat0), abs(lat1)))
        dlon = 360.0 if m_lon * 360.0 <= radius_m * 2 else radius_m / m_lon
        return dlat, dlon

    def nearest_allowed(
        self, lat: float, lon: float, radius_m: float, need: np.ndarray, states: np.ndarray, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int] | None:
        """The compiled search (:func:`geodata.kernels.nearest_allowed`), or None without Numba.

        ``need`` is the vehicle's (length, width, height, weight), ``states``
        the stay's state per rule list (filled in by the caller).
        """
        if len(self.spots) == 0 or not kernels.enabled():
            return None
        return kernels.nearest_allowed(
            self._keys, self._kernel_levels, self._kernel_seg_bounds, self._kernel_segments, self._is_polygon,
            self.fit_limits, need, self.ruleset_id, states, self.parallel_curb, self.length, self.capacity,
            self.fit_config.manoeuvre_margin_m, lat, lon, radius_m, limit)

    def warm_up(self) -> None:
        """Compile the search (or load it from Numba's disk cache) now, e.g. before a server forks."""
        if len(self.spots) == 0 or not kernels.enabled():
            return
        lat, lon = float(self._kernel_segments[0, 0]), float(self._kernel_segments[1, 0])
        self.nearest_allowed(lat, lon, 1.0, np.zeros(4), np.zeros(len(self.rulesets), dtype=np.int8), 1)

    def _row_bounds(self, lat: float, lon: float, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``[lo, hi)`` of the spots in each row of cells of the query window, every level at once."""
        dlat, dlon = self._window(lat, radius_m)
        lat0, lat1 = max(lat - dlat, -90.0), min(lat + dlat, 90.0)
        lo_keys: list[int] = []
        hi_keys: list[int] = []
        for lv in self._levels:
            cell, ncols = lv.cell, lv.ncols
            r0 = max(int((lat0 - lv.pad_lat + 90.0) // cell), 0)
            r1 = min(int((lat1 + lv.pad_lat + 90.0) // cell), lv.nrows - 1)
            lo_lon, hi_lon = lon - dlon - lv.pad_lon, lon + dlon + lv.pad_lon
            if hi_lon - lo_lon >= 360.0:
                spans = [(0, ncols - 1)]
            else:
                c0 = int((lo_lon + 180.0) // cell)
                c1 = int((hi_lon + 180.0) // cell)
                if c0 < 0:
                    spans = [(c0 + ncols, ncols - 1), (0, c1)]
                elif c1 >= ncols:
                    spans = [(c0, ncols - 1), (0, c1 - ncols)]
                else:
                    spans = [(c0, c1)]
            for r in range(lv.base + r0 * ncols, lv.base + r1 * ncols + 1, ncols):
                for c0, c1 in spans:
                    lo_keys.append(r + c0)
                    hi_keys.append(r + c1)
        keys = self._keys
        return np.searchsorted(keys, lo_keys, "left"), np.searchsorted(keys, hi_keys, "right")

    def _candidates(self, lat: float, lon: float, radius_m: float) -> np.ndarray:
        """Positions of the spots in the query window (a superset of the hits), in position order."""
        lo, hi = self._row_bounds(lat, lon, radius_m)
        return _ranges(lo, hi)

    def _inside_polygons(self, lat: float, lon: float) -> np.ndarray:
        """Positions of the polygons that contain (or touch) the point."""
        found = self._polygon_tree.query(shapely.Point(lon, lat), predicate="intersects")
        return self._polygon_pos.take(found)

    def _near(self, lat: float, lon: float, radius_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Candidate positions and their squared geodesic distances (m²)."""
        lo, hi = self._row_bounds(lat, lon, radius_m)
        if self._all_points or self._one_segment:
            pos = _ranges(lo, hi)
            if self._all_points:
                return pos, point_distance2(lat, lon, self._points.take(pos, axis=1))
            d2 = segment_distance2(lat, lon, self._segments.take(pos, axis=1))
        else:
            # A row of spots is a row of their segments: gather those, then the minimum per spot.
            bounds = self._seg_bounds
            seg = _ranges(bounds.take(lo), bounds.take(hi))
            if len(seg) == 0:
                return seg, np.empty(0)
            d2 = segment_distance2(lat, lon, self._segments.take(seg, axis=1))
            first = np.flatnonzero(self._seg_is_first.take(seg))
            pos = self._seg_owner.take(seg.take(first))
            d2 = np.minimum.reduceat(d2, first)
        if self._has_polygons:
            inside = self._inside_polygons(lat, lon)
            for p in inside.tolist():
                d2[pos == p] = 0.0
        return pos, d2

    def within(self, lat: float, lon: float, radius_m: float) -> Hits:
        """Spots within ``radius_m`` geodesic metres of (lat, lon), in no particular order."""
        pos, d2 = self._near(lat, lon, radius_m)
        if len(pos) == 0:
            return Hits(pos, np.empty(0))
        # Compare squared distances; take square roots of the hits only.
        keep = np.flatnonzero(d2 <= radius_m * radius_m)
        return Hits(pos.take(keep), np.sqrt(d2.take(keep)))

    def query(self, lat: float, lon: float, radius_m: float) -> Hits:
        """Spots within ``radius_m`` geodesic metres of (lat, lon), nearest first."""
        pos, d = self.within(lat, lon, radius_m)
        order = np.argsort(d, kind="stable")
        return Hits(pos[order], d[order])
