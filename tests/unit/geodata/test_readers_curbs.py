"""CurbLR and CDS Curbs: regulations and policies become ordered rules in the feed's time zone."""

from __future__ import annotations

import io
from datetime import datetime

import pytest

from geodata.allowed import evaluate
from geodata.model import Rate, Rule
from geodata.readers import open_reader

from .conftest import FIXTURES, OneWayStream, by_id, read_all

NEW_YORK = "America/New_York"


@pytest.fixture(scope="module")
def cds():
    reader, results = read_all("cds_curbs.json", dataset="nyc")
    return reader, by_id(results)


def test_cds_takes_its_time_zone_from_the_header(cds):
    reader, _ = cds

    assert reader.format == "cds" and reader.timezone == NEW_YORK
    assert reader.stats.features == 4 and reader.stats.spots == 3


def test_cds_policies_are_ordered_by_priority_and_use_the_rule_for_everyone(cds):
    zone = cds[1]["zone-metered"].spots[0]

    assert zone.rules == (
        Rule("Mo,Tu,We,Th,Fr 16:00-19:00", "no_stopping"),
        Rule("Mo,Tu,We,Th,Fr,Sa 09:00-19:00", "parking", "public", 60, True, Rate(4.5, 60, "USD")),
    )
    assert evaluate(zone.rules, datetime(2024, 7, 2, 10, 0), 45, NEW_YORK).allowed
    assert not evaluate(zone.rules, datetime(2024, 7, 2, 15, 30), 45, NEW_YORK).allowed  # rush hour at 16:00


def test_cds_zone_lengths_in_centimetres_prefer_the_longest_available_gap(cds):
    zone = cds[1]["zone-metered"].spots[0]

    assert (zone.kind, zone.orientation, zone.length_m, zone.capacity) == ("curb", "parallel", 12.0, 4)
    assert zone.max_vehicle_width_m == 2.5


def test_cds_spaces_inherit_their_zone_policies_and_keep_their_own_size(cds):
    space = cds[1]["space-1"].spots[0]

    assert (space.kind, space.length_m, space.max_vehicle_width_m, space.orientation) == ("space", 5.2, 2.1, "parallel")
    assert space.rules == cds[1]["zone-metered"].spots[0].rules


def test_cds_class_restricted_loading_is_not_public_and_missing_policies_reject_the_zone(cds):
    loading = cds[1]["zone-loading"].spots[0]

    assert loading.orientation == "diagonal"
    assert loading.rules == (Rule(None, "loading", "private"),)
    assert cds[1]["zone-broken"].rejected
    assert cds[1]["zone-broken"].issues[0].message == "policy 'pol-missing' is not in the file"


@pytest.fixture(scope="module")
def small():
    reader, results = read_all("small_manifest_last.curblr.json", dataset="pdx")
    return reader, results


def test_a_curblr_manifest_after_the_features_is_still_found(small):
    reader, results = small

    assert reader.timezone == "America/Los_Angeles"
    assert len(results) == 6 and all(r.spots for r in results)


def test_a_non_seekable_curblr_stream_is_read_completely():
    data = (FIXTURES / "small_manifest_last.curblr.json").read_bytes()

    results = list(open_reader(io.BufferedReader(OneWayStream(data)), "curblr"))

    assert len(results) == 6


def test_curblr_regulations_are_ranked_and_translated(small):
    street = small[1][4].spots[0]

    assert (street.orientation, street.capacity) == ("perpendicular", 6)
    assert street.max_vehicle_height_m == pytest.approx(7 * 0.3048)  # the manifest says feet
    assert [r.activity for r in street.rules] == ["no_parking", "parking", "parking"]
    assert street.rules[0].when == "Apr 01-Nov 30 Tu[2,4] 11:00-13:00"
    assert street.rules[1] == Rule("18:00-24:00", "parking", "permit")
    assert street.rules[2] == Rule(None, "parking", "public", 240, False)


def test_curblr_street_cleaning_and_permit_hours_decide_at_their_times(small):
    rules = small[1][4].spots[0].rules
    tz = "America/Los_Angeles"

    assert not evaluate(rules, datetime(2024, 7, 9, 11, 30), 30, tz).allowed  # 2nd Tuesday, cleaning
    assert evaluate(rules, datetime(2024, 7, 16, 11, 30), 30, tz).allowed  # 3rd Tuesday
    assert not evaluate(rules, datetime(2024, 7, 16, 18, 30), 30, tz).allowed  # permit holders only
    assert not evaluate(rules, datetime(2024, 7, 16, 16, 30), 120, tz).allowed  # runs into 18:00


def test_an_unknown_designated_period_makes_a_restriction_apply_always(small):
    snow = small[1][5]

    assert snow.spots[0].rules[0] == Rule(None, "no_parking")
    assert "snow emergency" in snow.issues[0].message and snow.issues[0].level == "warning"


# The real Portland feed --------------------------------------------------------------

LA = "America/Los_Angeles"
PAID = 9  # ab90f171… left side: paid parking Mo-Sa 08-19, Su 13-19, 120 min, except holidays
FREE = 383  # the same curb: free parking at all other times
LOADING = 4  # loading zone Mo-Sa 07-19
NO_STANDING = 13


@pytest.fixture(scope="module")
def portland(portland_path):
    with open(portland_path, "rb") as fp:
        reader = open_reader(fp)
        results = list(reader)
    return reader, results


def test_every_feature_of_the_real_feed_becomes_a_spot(portland):
    reader, results = portland

    assert reader.format == "curblr" and reader.timezone == LA
    assert len(results) == 416
    assert all(len(r.spots) == 1 and not r.rejected for r in results)
    assert all(r.spots[0].kind == "curb" and r.spots[0].orientation == "parallel" for r in results)


def test_paid_parking_allows_an_hour_on_tuesday_morning_but_not_three(portland):
    paid = portland[1][PAID].spots[0]

    assert paid.rules[0].fee and paid.rules[0].max_stay_min == 120
    assert paid.rules[0].rate == Rate(0.5, 15, "USD")
    hour = evaluate(paid.rules, datetime(2024, 7, 2, 10, 0), 60, LA)
    assert hour.allowed and hour.allowed_until == datetime(2024, 7, 2, 12, 0, tzinfo=hour.allowed_until.tzinfo)
    assert not evaluate(paid.rules, datetime(2024, 7, 2, 10, 0), 180, LA).allowed


def test_paid_parking_starts_at_13_on_sunday_and_the_free_segment_covers_the_morning(portland):
    paid, free = portland[1][PAID].spots[0], portland[1][FREE].spots[0]
    sunday_10 = datetime(2024, 7, 7, 10, 0)

    assert not evaluate(paid.rules, sunday_10, 60, LA).allowed
    morning = evaluate(free.rules, sunday_10, 60, LA)
    assert morning.allowed and morning.allowed_until.hour == 13 and not morning.fee


def test_paid_parking_is_lifted_on_public_holidays_when_the_country_is_known(portland):
    paid = portland[1][PAID].spots[0]
    independence_day = datetime(2024, 7, 4, 10, 0)

    assert not evaluate(paid.rules, independence_day, 60, LA, "US").allowed
    assert evaluate(paid.rules, datetime(2024, 7, 3, 10, 0), 60, LA, "US").allowed


@pytest.mark.parametrize("feature", [LOADING, NO_STANDING])
def test_loading_zones_and_no_standing_are_never_allowed_for_a_public_car(portland, feature):
    spot = portland[1][feature].spots[0]

    for day in range(1, 8):
        for hour in range(0, 24, 3):
            assert not evaluate(spot.rules, datetime(2024, 7, day, hour, 30), 15, LA).allowed
