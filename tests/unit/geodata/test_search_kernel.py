"""The compiled search (geodata.kernels) answers exactly what the NumPy array path answers."""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta, timezone

import pytest
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from geodata import kernels
from geodata.index import SpotIndex
from geodata.model import Rule, Spot, Vehicle
from geodata.search import search

# Numba is a dependency (setup.cfg): without it this fails; only a deliberate NUMBA_DISABLE_JIT skips.
pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"),
                                reason="NUMBA_DISABLE_JIT is set")


def test_the_compiled_search_is_on():
    assert kernels.enabled()


SMART = Vehicle(2.69, 1.66, 1.55, 900)
GOLF = Vehicle(4.5, 1.8, 1.5, 1400)
VAN = Vehicle(5.4, 2.0, 2.5, 3200)
TEMPLATES = [
    (Rule(None, "parking"),),
    (Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True), Rule(None, "parking")),
    (Rule(None, "no_stopping"),),
    (Rule("Mo-Fr 07:00-09:00", "no_parking"), Rule(None, "parking", max_stay_min=240)),
]


def _square(lon: float, lat: float, side: float) -> list[tuple[float, float]]:
    return [(lon, lat), (lon + side, lat), (lon + side, lat + side), (lon, lat + side), (lon, lat)]


def _geometry(rng: random.Random, lon: float, lat: float, kinds: str):
    kind = rng.choice(kinds)
    if kind == "point":
        return Point(lon, lat)
    if kind == "line":
        return LineString([(lon, lat), (lon + rng.uniform(-2e-4, 2e-4), lat + rng.uniform(-2e-4, 2e-4)),
                           (lon + rng.uniform(-2e-4, 2e-4), lat)])
    if kind == "polygon":  # a lot with a courtyard, big enough to contain query points
        side = rng.uniform(3e-4, 2e-3)
        inner = _square(lon + side / 3, lat + side / 3, side / 3)
        return Polygon(_square(lon, lat, side), [inner])
    side = rng.uniform(2e-4, 8e-4)
    return MultiPolygon([Polygon(_square(lon, lat, side)), Polygon(_square(lon + 2 * side, lat, side))])


def _layer(seed: int, kinds: str, centre: tuple[float, float], n: int = 3000) -> SpotIndex:
    rng = random.Random(seed)
    lat0, lon0 = centre
    spots = []
    for i in range(n):
        lon = lon0 + rng.uniform(-0.02, 0.02)
        lat = lat0 + rng.uniform(-0.02, 0.02)
        lon = (lon + 180.0) % 360.0 - 180.0
        spots.append(Spot(_geometry(rng, lon, lat, kinds), kind=rng.choice(["curb", "space", "lot"]),
                          orientation=rng.choice(["parallel", "perpendicular", None]),
                          length_m=rng.choice([None, rng.uniform(2.5, 15)]),
                          max_vehicle_height_m=rng.choice([None, 1.9, 2.2]), max_vehicle_weight_kg=rng.choice([None, 1200]),
                          capacity=rng.choice([None, 2, 10]), rules=rng.choice(TEMPLATES), source_feature_id=str(i)))
    return SpotIndex(spots, default_timezone="Europe/Paris")


def _answers(index: SpotIndex, queries: list[tuple]) -> list[list[tuple[float, str, int]]]:
    out = []
    for lat, lon, radius, vehicle, at, duration, limit in queries:
        found = search(index, lat, lon, radius, vehicle, at, duration, limit=limit)
        # Equal distances may come in either order: compare sorted by (distance, id).
        out.append(sorted((round(r.distance_m, 6), r.id, r.spaces_for_vehicle) for r in found))
    return out


def _queries(seed: int, centre: tuple[float, float], count: int = 60) -> list[tuple]:
    rng = random.Random(seed + 1000)
    lat0, lon0 = centre
    return [((lat0 + rng.uniform(-0.02, 0.02)), (lon0 + rng.uniform(-0.02, 0.02) + 180.0) % 360.0 - 180.0,
             rng.choice([50, 300, 800]), rng.choice([SMART, GOLF, VAN]),
             datetime(2024, 7, rng.randint(1, 7), rng.randint(0, 23), 15), rng.choice([30, 90, 300]),
             rng.choice([1, 5, 20, 200])) for _ in range(count)]


@pytest.mark.parametrize("kinds,centre", [
    (("point",), (48.85, 2.35)),
    (("line",), (48.85, 2.35)),
    (("point", "line", "polygon", "multi"), (48.85, 2.35)),
    (("point", "line", "polygon"), (-33.9, 179.995)),  # a layer across the antimeridian
    (("point", "polygon"), (81.0, 10.0)),  # far north, where longitude wraps in the plane
])
def test_the_compiled_search_answers_what_the_array_path_answers(kinds, centre, monkeypatch):
    index = _layer(len(kinds), kinds, centre)
    queries = _queries(len(kinds), centre)
    compiled = _answers(index, queries)  # rule lists decided on the way (the sorting path)
    warm = _answers(index, queries)  # every rule list decided: answered from the kept nearest hits

    monkeypatch.setattr(kernels, "enabled", lambda: False)
    index.decision_cache.clear()
    arrays = _answers(index, queries)

    for answers in (compiled, warm):
        # Spots at exactly the same distance (inside two lots, say) may be cut by ``limit`` either way.
        assert [[d for d, _, _ in a] for a in answers] == [[d for d, _, _ in a] for a in arrays]
        assert [[x for x in a if x[0] < a[-1][0]] for a in answers if a] == \
            [[x for x in a if x[0] < a[-1][0]] for a in arrays if a]
    assert sum(len(a) for a in compiled) > len(queries)  # the queries do find spots


def test_a_point_inside_a_lot_is_at_distance_zero_and_not_inside_its_courtyard():
    lot = Polygon(_square(2.35, 48.85, 0.003), [_square(2.351, 48.851, 0.001)])
    index = SpotIndex([Spot(lot, kind="lot", rules=TEMPLATES[0], source_feature_id="lot")],
                      default_timezone="Europe/Paris")
    at = datetime(2024, 7, 2, 10, 0)

    inside = search(index, 48.8505, 2.3505, 50, GOLF, at, 60)
    courtyard = search(index, 48.8515, 2.3515, 50, GOLF, at, 60)

    assert [(r.id, r.distance_m) for r in inside] == [("lot", 0.0)]
    assert courtyard[0].distance_m > 30


def test_rule_lists_decided_on_the_way_are_kept_for_the_next_search(monkeypatch):
    index = _layer(7, ("point", "line"), (48.85, 2.35))
    at = datetime(2024, 7, 2, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    same_start = datetime(2024, 7, 2, 8, 0, tzinfo=timezone(timedelta(0)))  # another tzinfo, as each request has

    first = search(index, 48.85, 2.35, 300, SMART, at, 60)
    ruleset_type = type(index.rulesets[0])
    evaluate, calls = ruleset_type.evaluate, []
    monkeypatch.setattr(ruleset_type, "evaluate", lambda self, *args: calls.append(args) or evaluate(self, *args))
    second = search(index, 48.85, 2.35, 300, SMART, same_start, 60)
    other_stay = search(index, 48.85, 2.35, 300, SMART, at, 61)

    assert [r.id for r in first] == [r.id for r in second] and len(first) == 20
    assert all(args == (at, 61) for args in calls) and len(calls) >= len({r.decision for r in other_stay})
    assert [r.decision for r in first] == [r.decision for r in second]


def test_warming_up_compiles_the_search_for_the_index_without_changing_its_answers():
    index = _layer(9, ("point", "line", "polygon"), (48.85, 2.35))
    index.warm_up()
    at = datetime(2024, 7, 2, 10, 0)

    assert not index.decision_cache  # nothing decided by the warm-up
    assert len(search(index, 48.85, 2.35, 300, SMART, at, 60)) == 20
