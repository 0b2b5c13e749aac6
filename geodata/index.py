"""In-memory spatial index over spots whose query cost follows the hits, not the layer.

Structure: a multi-level uniform grid in degrees. A spot goes to the finest
level whose cell is at least as large as its bounding box (points and curb
segments: level 0, cells of ``cell_deg``), keyed by the cell of its bbox
centre. All per-spot arrays are stored sorted by (level, cell key), so one
row of cells in a query window is one contiguous slice found with two binary
searches; the window is the query circle's bbox grown by the largest half
extent of that level's spots. Candidates then get an exact geodesic distance
(:mod:`geodata.geo`, vectorised over their segments; 0 inside a polygon) and
are cut at the radius.

The index also precomputes what :mod:`geodata.search` filters on (fit limits
per spot, one compiled :class:`~geodata.allowed.RuleSet` per distinct rule
list and time zone), so a search is a few NumPy passes over the hits.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import shapely

from geodata.allowed import RuleSet
from geodata.fit import DEFAULT_FIT, FitConfig, is_parallel_curb, max_length_m
from geodata.geo import metres_per_degree, point_distance2, segment_distance2
from geodata.model import Spot

_LEVEL_FACTOR = 4
_MAX_LEVELS = 8


class Hits(NamedTuple):
    """Spots near a point: positions into ``SpotIndex.spots`` and geodesic distances in metres."""

    positions: np.ndarray
    distances_m: np.ndarray


class _Level:
    __slots__ = ("cell", "ncols", "nrows", "keys", "offset", "pad_lat", "pad_lon")

    def __init__(self, cell: float, keys: np.ndarray, offset: int, pad_lat: float, pad_lon: float) -> None:
        self.cell = cell
        self.ncols = int(math.ceil(360.0 / cell))
        self.nrows = int(math.ceil(180.0 / cell)) + 1
        self.keys = keys
        self.offset = offset
        self.pad_lat = pad_lat
        self.pad_lon = pad_lon


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(start, stop)`` for every pair, without a Python loop."""
    counts = stops - starts
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return shift + np.arange(total, dtype=np.int64)


class SpotIndex:
    """A grid index over spots (up to millions) for radius queries with geodesic distances."""

    def __init__(
        self,
        spots: Iterable[Spot],
        *,
        ids: Sequence[str] | None = None,
        cell_deg: float = 0.001,
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
        self._levels = self._build_levels(bounds, level, key, cell_deg)
        self._build_segments()
        self._build_attributes(timezones or {}, default_timezone, countries or {})
        self.decision_cache: dict = {}

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
    def _build_levels(bounds: np.ndarray, level: np.ndarray, key: np.ndarray, cell: float) -> list[_Level]:
        levels = []
        for k in np.unique(level):
            lo, hi = np.searchsorted(level, [k, k + 1])
            half_lat = (bounds[lo:hi, 3] - bounds[lo:hi, 1]) * 0.5
            half_lon = (bounds[lo:hi, 2] - bounds[lo:hi, 0]) * 0.5
            size = cell * _LEVEL_FACTOR ** int(k)
            levels.append(_Level(size, key[lo:hi], int(lo), float(half_lat.max()), float(half_lon.max())))
        return levels

    def _build_segments(self) -> None:
        geoms = self._geoms
        n = len(geoms)
        kinds = shapely.get_type_id(geoms) if n else np.zeros(0, dtype=np.int64)
        self._is_polygon = (kinds == 3) | (kinds == 6)
        self._has_polygons = bool(self._is_polygon.any())
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

    # -- query ---------------------------------------------------------------

    def _candidates(self, lat: float, lon: float, radius_m: float) -> np.ndarray:
        m_lat, _ = metres_per_degree(lat)
        dlat = radius_m / m_lat
        lat0, lat1 = max(lat - dlat, -90.0), min(lat + dlat, 90.0)
        _, m_lon = metres_per_degree(max(abs(lat0), abs(lat1)))
        dlon = 360.0 if m_lon * 360.0 <= radius_m * 2 else radius_m / m_lon
        found = []
        for lv in self._levels:
            cell = lv.cell
            r0 = max(int((lat0 - lv.pad_lat + 90.0) // cell), 0)
            r1 = min(int((lat1 + lv.pad_lat + 90.0) // cell), lv.nrows - 1)
            lo_lon, hi_lon = lon - dlon - lv.pad_lon, lon + dlon + lv.pad_lon
            if hi_lon - lo_lon >= 360.0:
                spans = [(0, lv.ncols - 1)]
            else:
                c0 = int((lo_lon + 180.0) // cell)
                c1 = int((hi_lon + 180.0) // cell)
                if c0 < 0:
                    spans = [(c0 + lv.ncols, lv.ncols - 1), (0, c1)]
                elif c1 >= lv.ncols:
                    spans = [(c0, lv.ncols - 1), (0, c1 - lv.ncols)]
                else:
                    spans = [(c0, c1)]
            rows = np.arange(r0, r1 + 1, dtype=np.int64) * lv.ncols
            for c0, c1 in spans:
                lo = np.searchsorted(lv.keys, rows + c0, "left")
                hi = np.searchsorted(lv.keys, rows + c1, "right")
                found.append(_ranges(lo, hi) + lv.offset)
        if not found:
            return np.empty(0, dtype=np.int64)
        return found[0] if len(found) == 1 else np.concatenate(found)

    def _distance2(self, lat: float, lon: float, pos: np.ndarray) -> np.ndarray:
        """Squared geodesic distances (m²) from (lat, lon) to the spots at ``pos``."""
        if self._all_points:
            return point_distance2(lat, lon, self._points.take(pos, axis=1))
        if self._one_segment:
            d2 = segment_distance2(lat, lon, self._segments.take(pos, axis=1))
        else:
            counts = self._seg_count.take(pos)
            starts = self._seg_start.take(pos)
            d2 = segment_distance2(lat, lon, self._segments.take(_ranges(starts, starts + counts), axis=1))
            d2 = np.minimum.reduceat(d2, np.cumsum(counts) - counts)
        if self._has_polygons:
            poly = np.flatnonzero(self._is_polygon[pos])
            if len(poly):
                d2[poly[shapely.contains_xy(self._geoms[pos[poly]], lon, lat)]] = 0.0
        return d2

    def within(self, lat: float, lon: float, radius_m: float) -> Hits:
        """Spots within ``radius_m`` geodesic metres of (lat, lon), in no particular order."""
        pos = self._candidates(lat, lon, radius_m)
        if len(pos) == 0:
            return Hits(pos, np.empty(0))
        d2 = self._distance2(lat, lon, pos)
        # Compare squared distances; take square roots of the hits only.
        keep = np.flatnonzero(d2 <= radius_m * radius_m)
        return Hits(pos.take(keep), np.sqrt(d2.take(keep)))

    def query(self, lat: float, lon: float, radius_m: float) -> Hits:
        """Spots within ``radius_m`` geodesic metres of (lat, lon), nearest first."""
        pos, d = self.within(lat, lon, radius_m)
        order = np.argsort(d, kind="stable")
        return Hits(pos[order], d[order])
