"""Fit: which vehicles fit which spots, how many of them, and why (GEODATA.md "Fit")."""

from __future__ import annotations

import math
import random

import pytest
from shapely.geometry import LineString, Point, Polygon

from geodata.fit import FitConfig, fit, max_length_m, spaces_for_vehicle
from geodata.model import Spot, Vehicle

SMART = Vehicle(length_m=2.69, width_m=1.66, height_m=1.55, weight_kg=900)
GOLF = Vehicle(length_m=4.5, width_m=1.8, height_m=1.5, weight_kg=1400)
VAN = Vehicle(length_m=5.4, width_m=2.0, height_m=2.5, weight_kg=3200)
LINE = LineString([(2.35, 48.85), (2.3501, 48.85)])


def curb(length: float, **kw) -> Spot:
    return Spot(LINE, kind="curb", orientation=kw.pop("orientation", "parallel"), length_m=length, **kw)


def test_a_5_4_m_gap_holds_one_smart_and_no_normal_car():
    gap = curb(5.4)

    small = fit(gap, SMART)
    normal = fit(gap, GOLF)

    assert small.fits and small.spaces_for_vehicle == 1
    assert small.reasons[0] == "5.4 m curb holds 1 car of 2.69 m (needs 3.69 m each)"
    assert not normal.fits and normal.spaces_for_vehicle == 0
    assert normal.reasons[0] == "5.4 m curb is too short for a 4.5 m car (needs 5.5 m)"


def test_a_long_curb_holds_more_small_cars_than_big_ones_capped_by_capacity():
    assert fit(curb(12.0), SMART).spaces_for_vehicle == 3  # floor(13 / 3.69)
    assert fit(curb(12.0), GOLF).spaces_for_vehicle == 2  # floor(13 / 5.5)
    assert fit(curb(12.0, capacity=2), SMART).spaces_for_vehicle == 2
    assert "3 cars of 2.69 m" in fit(curb(12.0), SMART).reasons[0]


def test_a_curb_without_orientation_is_treated_as_parallel():
    assert fit(curb(5.4, orientation=None), SMART).fits
    assert not fit(curb(5.4, orientation=None), GOLF).fits


def test_the_manoeuvre_margin_is_configurable():
    tight = FitConfig(manoeuvre_margin_m=0.5)

    assert not fit(curb(5.0), GOLF).fits
    assert fit(curb(5.0), GOLF, tight).fits


def test_perpendicular_bays_take_vehicles_up_to_the_bay_depth():
    bays = curb(40.0, orientation="perpendicular", capacity=15)

    assert fit(bays, GOLF).fits
    assert fit(bays, GOLF).spaces_for_vehicle == 15
    assert not fit(bays, Vehicle(5.2)).fits
    assert fit(bays, Vehicle(5.2), FitConfig(bay_depth_m=5.5)).fits
    assert "perpendicular bay (5 m deep)" in fit(bays, GOLF).reasons[0]


def test_a_marked_diagonal_space_uses_its_marked_length():
    space = Spot(Point(2.35, 48.85), kind="space", orientation="diagonal", length_m=4.8)

    assert fit(space, GOLF).fits
    assert not fit(space, Vehicle(4.9)).fits


def test_legal_limits_reject_a_tall_van_and_explain_why():
    garage = Spot(Polygon([(0, 0), (0, 0.001), (0.001, 0.001)]), kind="lot", max_vehicle_height_m=2.0, capacity=300)

    van = fit(garage, VAN)
    car = fit(garage, GOLF)

    assert not van.fits
    assert "height 2.5 m is over the 2 m limit" in van.reasons
    assert car.fits and car.spaces_for_vehicle == 300


def test_every_legal_limit_counts_and_an_unknown_vehicle_dimension_does_not_pass_a_limit():
    spot = Spot(Point(0, 0), kind="space", max_vehicle_length_m=5.0, max_vehicle_width_m=1.9, max_vehicle_weight_kg=3500)

    assert fit(spot, GOLF).fits
    assert not fit(spot, Vehicle(5.1, 1.8, 1.5, 1400)).fits
    assert not fit(spot, Vehicle(4.5, 2.1, 1.5, 1400)).fits
    assert not fit(spot, Vehicle(4.5, 1.8, 1.5, 3600)).fits
    unknown = fit(spot, Vehicle(4.5, None, 1.5, 1400))
    assert not unknown.fits
    assert "the width limit is 1.9 m and the vehicle's width is unknown" in unknown.reasons


def test_a_lot_or_charger_or_unmarked_space_is_decided_by_legal_limits_alone():
    for kind in ("lot", "charger", "space"):
        spot = Spot(Point(0, 0), kind=kind)
        result = fit(spot, VAN)
        assert result.fits and result.spaces_for_vehicle == 1, kind


def test_a_curb_of_unknown_length_takes_no_vehicle():
    result = fit(Spot(Point(0, 0), kind="curb"), SMART)

    assert not result.fits
    assert "unknown" in result.reasons[0]


def test_capacity_zero_fits_nothing():
    assert not fit(Spot(Point(0, 0), kind="lot", capacity=0), SMART).fits


@pytest.mark.parametrize("seed", range(3))
def test_max_length_and_spaces_agree_with_fit_on_random_spots(seed):
    rng = random.Random(seed)
    for _ in range(500):
        spot = Spot(
            rng.choice([LINE, Point(0, 0)]),
            kind=rng.choice(["curb", "space", "lot", "charger", None]),
            orientation=rng.choice(["parallel", "perpendicular", "diagonal", None]),
            length_m=rng.choice([None, rng.uniform(2, 30)]),
            max_vehicle_length_m=rng.choice([None, rng.uniform(3, 8)]),
            capacity=rng.choice([None, 0, 1, 3]),
        )
        vehicle = Vehicle(rng.uniform(2, 7))
        result = fit(spot, vehicle)
        assert result.fits == (vehicle.length_m <= max_length_m(spot) + 1e-9)
        if result.fits:
            assert result.spaces_for_vehicle == spaces_for_vehicle(spot, vehicle.length_m) >= 1
        assert math.isfinite(max_length_m(spot)) or max_length_m(spot) in (math.inf, -math.inf)
