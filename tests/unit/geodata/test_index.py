"""The spatial index returns exactly what a brute-force geodesic scan returns."""

from __future__ import annotations

import random

import pytest
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from geodata.geo import distance_m, distance_to_geometry_m
from geodata.index import SpotIndex
from geodata.model import Spot


def random_spots(rng: random.Random, n: int, lon0: float, lat0: float, span: float) -> list[Spot]:
    spots = []
    for i in range(n):
        lon, lat = lon0 + rng.uniform(0, span), lat0 + rng.uniform(0, span)
        shape = rng.choice(["point", "point", "curb", "long", "lot", "big"])
        if shape == "point":
            geom = Point(lon, lat)
        elif shape == "curb":
            geom = LineString([(lon, lat), (lon + rng.gauss(0, 3e-4), lat + rng.gauss(0, 3e-4)),
                               (lon + rng.gauss(0, 3e-4), lat + rng.gauss(0, 3e-4))])
        elif shape == "long":  # spans many grid cells
            geom = LineString([(lon, lat), (lon + rng.uniform(-0.02, 0.02), lat + rng.uniform(-0.02, 0.02))])
        elif shape == "lot":
            s = rng.uniform(1e-4, 1e-3)
            geom = Polygon([(lon, lat), (lon + s, lat), (lon + s, lat + s), (lon, lat + s)],
                           [[(lon + s / 4, lat + s / 4), (lon + s / 2, lat + s / 4), (lon + s / 2, lat + s / 2)]])
        else:
            s = rng.uniform(0.01, 0.05)
            geom = Polygon([(lon, lat), (lon + s, lat), (lon + s, lat + s), (lon, lat + s)])
        spots.append(Spot(geom, kind="lot", source_feature_id=f"s{i}"))
    return spots


def brute_force(spots, lat, lon, radius):
    found = []
    for i, spot in enumerate(spots):
        d = distance_to_geometry_m(lat, lon, spot.geometry)
        if d <= radius:
            found.append((spot.source_feature_id, d))
    return sorted(found, key=lambda x: x[1])


@pytest.mark.parametrize("seed", range(3))
def test_queries_equal_a_brute_force_scan_on_random_mixed_geometries(seed):
    rng = random.Random(seed)
    spots = random_spots(rng, 700, -122.70, 45.50, 0.06)
    index = SpotIndex(spots)

    for _ in range(25):
        lat, lon = 45.50 + rng.uniform(-0.01, 0.07), -122.70 + rng.uniform(-0.01, 0.07)
        radius = rng.choice([50, 300, 1000, 5000])
        positions, distances = index.query(lat, lon, radius)
        got = {index.ids[p]: d for p, d in zip(positions.tolist(), distances.tolist())}
        expected = dict(brute_force(spots, lat, lon, radius))
        assert got.keys() == expected.keys()
        assert all(abs(got[k] - expected[k]) < 0.01 for k in got)
        assert list(distances) == sorted(distances)


def test_a_point_layer_uses_the_same_answers():
    rng = random.Random(11)
    spots = [Spot(Point(2.30 + rng.uniform(0, 0.05), 48.84 + rng.uniform(0, 0.05)), source_feature_id=str(i))
             for i in range(3000)]
    index = SpotIndex(spots)

    for _ in range(30):
        lat, lon = 48.84 + rng.uniform(0, 0.05), 2.30 + rng.uniform(0, 0.05)
        got = {index.ids[p] for p in index.within(lat, lon, 400).positions.tolist()}
        near = {s.source_feature_id for s in spots if distance_m(lat, lon, s.geometry.y, s.geometry.x) <= 400}
        assert got == near and len(near) > 10


def test_queries_across_the_antimeridian_find_spots_on_both_sides():
    spots = [Spot(Point(179.9995, -17.0), source_feature_id="east"),
             Spot(Point(-179.9995, -17.0), source_feature_id="west"),
             Spot(Point(179.99, -17.0), source_feature_id="far")]
    index = SpotIndex(spots)

    positions, distances = index.query(-17.0, 180.0, 100)

    assert sorted(index.ids[p] for p in positions.tolist()) == ["east", "west"]
    assert all(d < 60 for d in distances)


def test_inside_a_polygon_the_distance_is_zero_and_multipolygons_count_every_part():
    square = Polygon([(0, 0), (0.01, 0), (0.01, 0.01), (0, 0.01)])
    multi = MultiPolygon([Polygon([(1, 1), (1.001, 1), (1.001, 1.001)]), Polygon([(2, 2), (2.001, 2), (2.001, 2.001)])])
    index = SpotIndex([Spot(square, source_feature_id="sq"), Spot(multi, source_feature_id="multi")])

    positions, distances = index.query(0.005, 0.005, 10)
    assert [index.ids[p] for p in positions] == ["sq"] and distances[0] == 0.0
    assert [index.ids[p] for p in index.query(2.0005, 2.0009, 200).positions] == ["multi"]


def test_an_empty_index_answers_nothing():
    index = SpotIndex([])

    assert len(index) == 0
    assert len(index.query(0, 0, 1000).positions) == 0
