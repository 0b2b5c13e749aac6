"""Geodesic helpers against Karney's exact geodesics (geographiclib), to the centimetre at city scale."""

from __future__ import annotations

import random

import numpy as np
import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import LineString, Point, Polygon

from geodata.geo import distance_m, distance_to_geometry_m, geometry_length_m, segment_distance2

WGS84 = Geodesic.WGS84


@pytest.mark.parametrize("lat", [0.0, 35.0, 45.5, 60.0, 70.0])
def test_point_distances_match_the_exact_geodesic_within_a_centimetre(lat):
    rng = random.Random(int(lat))
    for _ in range(300):
        target = WGS84.Direct(lat, 10.0, rng.uniform(0, 360), rng.uniform(0, 5000))
        exact = target["s12"]
        assert distance_m(lat, 10.0, target["lat2"], target["lon2"]) == pytest.approx(exact, abs=0.01)


def test_long_distances_fall_back_to_the_exact_geodesic():
    exact = WGS84.Inverse(48.85, 2.35, 52.52, 13.40)["s12"]

    assert distance_m(48.85, 2.35, 52.52, 13.40) == pytest.approx(exact, abs=0.001)


def test_curb_length_is_the_geodesic_length_of_the_line():
    coords = [(-122.6804, 45.5210), (-122.6807, 45.5205), (-122.6811, 45.5203)]
    exact = sum(WGS84.Inverse(a[1], a[0], b[1], b[0])["s12"] for a, b in zip(coords, coords[1:]))

    assert geometry_length_m(LineString(coords)) == pytest.approx(exact, abs=0.005)


def _exact_distance_to_segment(lat, lon, a, b):
    """Minimum exact geodesic distance from a point to the geodesic a→b (ternary search)."""
    line = WGS84.InverseLine(a[1], a[0], b[1], b[0])
    lo, hi = 0.0, line.s13

    def at(s):
        p = line.Position(s)
        return WGS84.Inverse(lat, lon, p["lat2"], p["lon2"])["s12"]

    for _ in range(100):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if at(m1) < at(m2):
            hi = m2
        else:
            lo = m1
    return at((lo + hi) / 2)


def test_distance_to_the_nearest_point_of_a_curb_is_centimetre_accurate():
    rng = random.Random(7)
    for _ in range(60):
        a = (-122.68 + rng.uniform(-0.01, 0.01), 45.52 + rng.uniform(-0.01, 0.01))
        b = (a[0] + rng.uniform(-0.002, 0.002), a[1] + rng.uniform(-0.002, 0.002))
        lat, lon = 45.52 + rng.uniform(-0.02, 0.02), -122.68 + rng.uniform(-0.02, 0.02)
        ours = distance_to_geometry_m(lat, lon, LineString([a, b]))
        assert ours == pytest.approx(_exact_distance_to_segment(lat, lon, a, b), abs=0.01)


def test_a_point_inside_a_lot_is_at_distance_zero_and_outside_it_measures_to_the_edge():
    lot = Polygon([(2.35, 48.85), (2.352, 48.85), (2.352, 48.851), (2.35, 48.851)])

    assert distance_to_geometry_m(48.8505, 2.351, lot) == 0.0
    south = WGS84.Inverse(48.849, 2.351, 48.85, 2.351)["s12"]
    assert distance_to_geometry_m(48.849, 2.351, lot) == pytest.approx(south, abs=0.01)


def test_distances_across_the_antimeridian_take_the_short_way():
    exact = WGS84.Inverse(-17.0, 179.9999, -17.0, -179.9999)["s12"]

    assert distance_m(-17.0, 179.9999, -17.0, -179.9999) == pytest.approx(exact, abs=0.01)
    assert distance_to_geometry_m(-17.0, 179.9999, Point(-179.9999, -17.0)) == pytest.approx(exact, abs=0.01)


def test_vectorised_segment_distances_treat_points_as_zero_length_segments():
    segments = np.array([[45.52, 45.52], [-122.68, -122.68], [45.52, 45.521], [-122.68, -122.68]])

    d = np.sqrt(segment_distance2(45.5205, -122.68, segments))

    assert d[0] == pytest.approx(WGS84.Inverse(45.5205, -122.68, 45.52, -122.68)["s12"], abs=0.01)
    assert d[1] == pytest.approx(0.0, abs=0.01)
