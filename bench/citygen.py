"""Deterministic synthetic city: parking spots around a city centre, for the benchmarks.

``City(n, seed)`` describes ``n`` spots spread over a square around
``(lat0, lon0)`` (Berlin by default) at a constant density, so the square
grows with ``n`` and a 300 m radius holds about the same number of spots
(a few hundred) at 10k as at 1M spots. That makes "cost at 1M vs cost at
10k for the same hit count" a fair comparison.

The mix follows real curb data:

- ``curb`` (about 58 %): LineStrings of 3–60 m along a street grid (one
  street every 100 m, both sides), parallel / perpendicular / diagonal or
  unset; about one in ten has a bend (3 vertices); some carry a legal length
  or weight limit;
- ``space`` (about 22 %): marked single spaces (Points), some with a marked
  length, some width-limited;
- ``lot`` (about 9 %): off-street lots and garages (Polygons) with a
  capacity, garages with a height limit;
- ``charger`` (about 11 %): Points with connectors and power.

Rules are drawn from a small set of rule lists (real data has a few dozen
distinct ones, not one per spot), written as OSM opening_hours strings: paid
Mo-Sa 08:00-20:00 with max stay 120, residents only, loading zones,
rush-hour no stopping, street cleaning, lots with opening hours, ...

Everything is generated chunk by chunk (``CHUNK`` spots each, each chunk
from its own seeded generator), so :meth:`City.write_geojson` streams a
1,000,000-feature file with bounded memory (the file's text is made by
:mod:`bench.city_geojson`) and :meth:`City.spots` gives the very same spots
as objects for the in-process index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import shapely

from bench.city_geojson import write_feature_collection
from geodata.geo import metres_per_degree
from geodata.model import Rate, Rule, Spot, Vehicle

CHUNK = 10_000
DATASET = "bench-city"
TIMEZONE = "Europe/Berlin"
# Spots per km²: a dense inner-city district (a 300 m radius then holds ~350 spots).
DENSITY_PER_KM2 = 1200.0
STREET_SPACING_M = 100.0

SMART_FORTWO = Vehicle(length_m=2.69, width_m=1.66, height_m=1.55, weight_kg=1000.0)
NORMAL_CAR = Vehicle(length_m=4.50, width_m=1.80, height_m=1.50, weight_kg=1500.0)
VEHICLES = {"smart_fortwo": SMART_FORTWO, "normal_car": NORMAL_CAR}

_EUR_HOUR = Rate(3.0, 60.0, "EUR")
_EUR_HOUR_LOT = Rate(2.5, 60.0, "EUR")
_EUR_KWH_PARK = Rate(0.1, 1.0, "EUR")


def _r(when: str | None, activity: str = "parking", access: str = "public", max_stay: float | None = None,
       fee: bool = False, rate: Rate | None = None) -> Rule:
    return Rule(when, activity, access, max_stay, fee or rate is not None, rate)


FREE = _r(None)
# The rule lists, by name. Each spot gets one of them (the same tuple object, as the readers intern them).
RULE_LISTS: dict[str, tuple[Rule, ...]] = {
    "free": (FREE,),
    "paid_mo_sa_8_20_max120": (_r("Mo-Sa 08:00-20:00", max_stay=120, rate=_EUR_HOUR), FREE),
    "paid_mo_sa_9_21_max60": (_r("Mo-Sa 09:00-21:00", max_stay=60, rate=_EUR_HOUR), FREE),
    "disc_max120_weekday": (_r("Mo-Fr 08:00-18:00; Sa 08:00-14:00", max_stay=120), FREE),
    "residents_mo_fr_9_18": (_r("Mo-Fr 09:00-18:00", access="residents"), FREE),
    "residents_always": (_r(None, access="residents"),),
    "loading_mo_fr_6_11": (_r("Mo-Fr 06:00-11:00", activity="loading"),
                           _r("Mo-Sa 08:00-20:00", max_stay=120, rate=_EUR_HOUR), FREE),
    "clearway_rush_hours": (_r("Mo-Fr 07:00-09:00,16:00-19:00", activity="no_stopping"), _r(None, max_stay=180)),
    "street_cleaning_tu": (_r("Tu 06:00-08:00", activity="no_parking"), FREE),
    "no_parking": (_r(None, activity="no_parking"),),
    "no_stopping": (_r(None, activity="no_stopping"),),
    "disabled": (_r(None, access="disabled"),),
    "lot_6_24_paid": (_r("Mo-Su 06:00-24:00", rate=_EUR_HOUR_LOT), _r(None, activity="no_parking")),
    "lot_24_7_paid": (_r("24/7", rate=_EUR_HOUR_LOT),),
    "lot_customers_shop_hours": (_r("Mo-Sa 08:00-20:00", access="customers", max_stay=90),
                                 _r(None, activity="no_parking")),
    "lot_private": (_r(None, access="private"),),
    "charger_max240": (_r(None, max_stay=240, rate=_EUR_KWH_PARK),),
    "charger_day_max120_night_free": (_r("Mo-Su 07:00-22:00", max_stay=120, rate=_EUR_KWH_PARK), _r(None)),
    "charger_customers": (_r("Mo-Sa 08:00-20:00", access="customers", max_stay=120),
                          _r(None, activity="no_parking")),
}

# Rule lists per kind, with weights.
_CURB_RULES = [("paid_mo_sa_8_20_max120", 30), ("free", 14), ("residents_mo_fr_9_18", 14),
               ("paid_mo_sa_9_21_max60", 8), ("disc_max120_weekday", 8), ("loading_mo_fr_6_11", 6),
               ("clearway_rush_hours", 6), ("street_cleaning_tu", 6), ("residents_always", 3),
               ("no_parking", 3), ("no_stopping", 2)]
_SPACE_RULES = [("paid_mo_sa_8_20_max120", 35), ("free", 20), ("disabled", 15), ("residents_always", 10),
                ("disc_max120_weekday", 10), ("loading_mo_fr_6_11", 10)]
_LOT_RULES = [("lot_6_24_paid", 40), ("lot_24_7_paid", 25), ("lot_customers_shop_hours", 25), ("lot_private", 10)]
_CHARGER_RULES = [("charger_max240", 50), ("charger_day_max120_night_free", 30), ("charger_customers", 20)]


def _table(entries: list[tuple[str, int]]) -> tuple[list[tuple[Rule, ...]], np.ndarray]:
    weights = np.array([w for _, w in entries], dtype=float)
    return [RULE_LISTS[name] for name, _ in entries], weights / weights.sum()


_RULE_TABLES = {k: _table(v) for k, v in
                (("curb", _CURB_RULES), ("space", _SPACE_RULES), ("lot", _LOT_RULES), ("charger", _CHARGER_RULES))}
_KINDS = ("curb", "space", "lot", "charger")
_KIND_P = np.array([0.58, 0.22, 0.09, 0.11])
_CONNECTORS = (("type2",), ("type2", "ccs"), ("ccs", "chademo"), ("type2", "ccs", "chademo"))
_POWER = (11.0, 22.0, 50.0, 150.0)
_OPERATORS = ("Stadtwerke", "ParkCo", "ChargeNet", None)


@dataclass(frozen=True)
class City:
    """``n`` spots around (lat0, lon0) at ``density`` spots per km², generated from ``seed``."""

    n: int
    seed: int = 20261127
    lat0: float = 52.52
    lon0: float = 13.40
    density: float = DENSITY_PER_KM2

    @property
    def side_m(self) -> float:
        """Side of the square the spots cover, in metres."""
        return math.sqrt(self.n / self.density) * 1000.0

    @property
    def timezones(self) -> dict[str, str]:
        """``SpotIndex(timezones=...)``: the generated dataset's zone."""
        return {DATASET: TIMEZONE}

    # -- generation ------------------------------------------------------------

    def _to_deg(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local metres east/north of the centre → (lon, lat), rounded to 1e-7° (1 cm) as in a file."""
        m_lat, _ = metres_per_degree(self.lat0)
        lat = self.lat0 + y / m_lat
        # Metres per degree of longitude at each point's own latitude.
        m_lon = metres_per_degree(self.lat0)[1] * np.cos(np.radians(lat)) / math.cos(math.radians(self.lat0))
        lon = self.lon0 + x / m_lon
        return np.round(lon, 7), np.round(lat, 7)

    def chunk_count(self) -> int:
        return (self.n + CHUNK - 1) // CHUNK

    def chunk(self, k: int) -> list[Spot]:
        """The spots of chunk ``k`` (spot ids ``c<global index>``)."""
        start = k * CHUNK
        m = min(CHUNK, self.n - start)
        if m <= 0:
            return []
        rng = np.random.default_rng([self.seed, self.n, k])
        half = self.side_m / 2.0
        kind_idx = rng.choice(4, size=m, p=_KIND_P)
        x = rng.uniform(-half, half, m)
        y = rng.uniform(-half, half, m)
        geoms = np.empty(m, dtype=object)
        length = np.full(m, np.nan)
        orient = np.full(m, -1, dtype=np.int64)  # index into ORIENT or -1
        # Curbs and spaces lie along the street grid: streets every 100 m, both sides, 6 m from the axis.
        street = (kind_idx == 0) | (kind_idx == 1)
        along_x = rng.random(m) < 0.5
        side = np.where(rng.random(m) < 0.5, -6.0, 6.0)
        snapped_y = np.round(y / STREET_SPACING_M) * STREET_SPACING_M + side
        snapped_x = np.round(x / STREET_SPACING_M) * STREET_SPACING_M + side
        y = np.where(street & along_x, snapped_y, y)
        x = np.where(street & ~along_x, snapped_x, x)

        # Curbs: 35 % single-car gaps (3–10 m), 40 % 10–30 m, 25 % 30–60 m.
        curbs = np.flatnonzero(kind_idx == 0)
        band = rng.choice(3, size=len(curbs), p=[0.35, 0.40, 0.25])
        lo = np.array([3.0, 10.0, 30.0])[band]
        hi = np.array([10.0, 30.0, 60.0])[band]
        clen = rng.uniform(lo, hi)
        corient = rng.choice(4, size=len(curbs), p=[0.65, 0.15, 0.12, 0.08])  # parallel, perp, diag, unset
        bent = rng.random(len(curbs)) < 0.10
        dirx = np.where(along_x[curbs], 1.0, 0.0)
        diry = 1.0 - dirx
        x0, y0 = x[curbs], y[curbs]
        # A bent curb: first 60 % straight, then a 20° turn (its length stays the sum of both parts).
        first = np.where(bent, 0.6 * clen, clen)
        xa, ya = x0 + dirx * first, y0 + diry * first
        turn = math.radians(20.0)
        rest = clen - first
        bx = xa + rest * (dirx * math.cos(turn) - diry * math.sin(turn))
        by = ya + rest * (dirx * math.sin(turn) + diry * math.cos(turn))
        npts = np.where(bent, 3, 2)
        idx = np.repeat(np.arange(len(curbs)), npts)
        cx = np.empty(len(idx))
        cy = np.empty(len(idx))
        starts = np.cumsum(npts) - npts
        cx[starts], cy[starts] = x0, y0
        cx[starts + 1], cy[starts + 1] = xa, ya
        cx[starts[bent] + 2], cy[starts[bent] + 2] = bx[bent], by[bent]
        lon, lat = self._to_deg(cx, cy)
        geoms[curbs] = shapely.linestrings(np.column_stack([lon, lat]), indices=idx)
        length[curbs] = np.round(clen, 2)
        orient[curbs] = np.where(corient == 3, -1, corient)

        # Spaces: parallel marked 5.0–6.5 m, perpendicular 5.0 m, unmarked, diagonal bays.
        spaces = np.flatnonzero(kind_idx == 1)
        stype = rng.choice(4, size=len(spaces), p=[0.40, 0.30, 0.20, 0.10])
        lon, lat = self._to_deg(x[spaces], y[spaces])
        geoms[spaces] = shapely.points(lon, lat)
        slen = np.where(stype == 0, np.round(rng.uniform(5.0, 6.5, len(spaces)), 1),
                        np.where(stype == 1, 5.0, np.nan))
        length[spaces] = slen
        orient[spaces] = np.array([0, 1, -1, 2])[stype]

        # Lots: rectangles of 20–120 m by 15–80 m.
        lots = np.flatnonzero(kind_idx == 2)
        w = rng.uniform(20.0, 120.0, len(lots))
        h = rng.uniform(15.0, 80.0, len(lots))
        lx = np.column_stack([x[lots], x[lots] + w, x[lots] + w, x[lots], x[lots]]).ravel()
        ly = np.column_stack([y[lots], y[lots], y[lots] + h, y[lots] + h, y[lots]]).ravel()
        lon, lat = self._to_deg(lx, ly)
        geoms[lots] = shapely.polygons(shapely.linearrings(np.column_stack([lon, lat]),
                                                           indices=np.repeat(np.arange(len(lots)), 5)))
        lot_capacity = np.maximum((w * h / 30.0).astype(np.int64), 5)
        garage = rng.random(len(lots)) < 0.30
        garage_height = rng.choice([2.0, 2.1, 2.2, 2.3], size=len(lots))

        # Chargers: points.
        chargers = np.flatnonzero(kind_idx == 3)
        lon, lat = self._to_deg(x[chargers], y[chargers])
        geoms[chargers] = shapely.points(lon, lat)

        # Rules, limits and the rest, per kind.
        rule_choice = np.empty(m, dtype=np.int64)
        for kind_no, kind in enumerate(_KINDS):
            where = np.flatnonzero(kind_idx == kind_no)
            _, p = _RULE_TABLES[kind]
            rule_choice[where] = rng.choice(len(p), size=len(where), p=p)
        u_len = rng.random(m)
        u_weight = rng.random(m)
        u_width = rng.random(m)
        u_cap = rng.random(m)
        u_misc = rng.integers(0, 1 << 30, m)
        lot_no = {int(p): j for j, p in enumerate(lots)}

        spots: list[Spot] = []
        orient_names = ("parallel", "perpendicular", "diagonal")
        for i in range(m):
            kind = _KINDS[kind_idx[i]]
            rules = _RULE_TABLES[kind][0][rule_choice[i]]
            o = orient[i]
            fields: dict[str, Any] = {}
            ln = length[i]
            if kind == "curb":
                if u_len[i] < 0.05:
                    fields["max_vehicle_length_m"] = 5.0 if u_misc[i] & 1 else 6.0
                if u_weight[i] < 0.05:
                    fields["max_vehicle_weight_kg"] = 3500.0
                if o in (1, 2) and u_cap[i] < 0.5:
                    fields["capacity"] = max(int(ln // (2.5 if o == 1 else 3.0)), 1)
            elif kind == "space":
                if u_width[i] < 0.03:
                    fields["max_vehicle_width_m"] = 2.0
            elif kind == "lot":
                j = lot_no[i]
                fields["capacity"] = int(lot_capacity[j])
                if garage[j]:
                    fields["max_vehicle_height_m"] = float(garage_height[j])
                fields["name"] = f"Parkhaus {u_misc[i] % 997}" if garage[j] else f"Parkplatz {u_misc[i] % 997}"
                operator = _OPERATORS[u_misc[i] % 4]
                if operator:
                    fields["operator"] = operator
            else:
                fields["connectors"] = _CONNECTORS[u_misc[i] % 4]
                fields["power_kw"] = _POWER[(u_misc[i] >> 2) % 4]
                fields["capacity"] = 1 + int((u_misc[i] >> 4) % 4)
                operator = _OPERATORS[(u_misc[i] >> 6) % 3]
                fields["operator"] = operator
            spots.append(Spot(
                geometry=geoms[i],
                kind=kind,
                orientation=None if o < 0 else orient_names[o],
                length_m=None if ln != ln else float(ln),
                rules=rules,
                source_dataset=DATASET,
                source_feature_id=f"c{start + i}",
                **fields,
            ))
        return spots

    def iter_spots(self) -> Iterator[Spot]:
        """Every spot, one chunk in memory at a time."""
        for k in range(self.chunk_count()):
            yield from self.chunk(k)

    def spots(self) -> list[Spot]:
        """Every spot as a list (for the in-process index)."""
        out: list[Spot] = []
        for k in range(self.chunk_count()):
            out.extend(self.chunk(k))
        return out

    # -- queries ---------------------------------------------------------------

    def query_points(self, count: int, seed: int = 1, margin_m: float = 300.0, jitter_m: float = 25.0
                     ) -> list[tuple[float, float]]:
        """``count`` (lat, lon) query points on streets among the spots, at least ``margin_m`` from the city's edge.

        Points sit within ``jitter_m`` of a street (where a driver asks from),
        and far enough from the edge that a ``margin_m`` circle is full of
        spots at every city size.
        """
        rng = np.random.default_rng([self.seed, self.n, seed, 7])
        inner = max(self.side_m / 2.0 - margin_m, self.side_m / 4.0)
        x = rng.uniform(-inner, inner, count)
        y = rng.uniform(-inner, inner, count)
        along_x = rng.random(count) < 0.5
        y = np.where(along_x, np.round(y / STREET_SPACING_M) * STREET_SPACING_M + rng.uniform(-jitter_m, jitter_m, count), y)
        x = np.where(~along_x, np.round(x / STREET_SPACING_M) * STREET_SPACING_M + rng.uniform(-jitter_m, jitter_m, count), x)
        lon, lat = self._to_deg(x, y)
        return list(zip(lat.tolist(), lon.tolist()))

    # -- GeoJSON -----------------------------------------------------------------

    def write_geojson(self, path: str | Path) -> int:
        """Write every spot as a FeatureCollection of ``Spot.to_feature()`` features; returns bytes written.

        Streams chunk by chunk: memory stays at one chunk whatever ``n``. The
        text is what ``json`` makes of ``Spot.to_feature()`` (compact, not
        ASCII-escaped), built faster: the geometries from the chunk's
        coordinates in one pass (``float`` repr, as ``json``), each distinct
        rule list encoded once (a city has a few dozen), so that writing a
        million features costs about half of encoding every feature whole.
        """
        return write_feature_collection(self, path)


def query_times(count: int, seed: int = 3, distinct: int | None = None) -> list[datetime]:
    """Naive local times (dataset zone) in the week of Mon 2026-11-23, 07:00–23:00.

    ``distinct`` limits them to that many different minutes (a service that
    rounds "now" to the minute sees a few distinct times per minute of load);
    ``None`` gives a different second for every query (cold decision cache).
    """
    rng = np.random.default_rng([seed, count])
    monday = datetime(2026, 11, 23)
    pool = distinct if distinct is not None else count
    days = rng.integers(0, 7, pool)
    secs = rng.integers(7 * 3600, 23 * 3600, pool)
    if distinct is not None:
        secs = secs - secs % 60
    times = [monday + timedelta(days=int(d), seconds=int(s)) for d, s in zip(days, secs)]
    if distinct is None:
        return times
    return [times[i % distinct] for i in range(count)]
