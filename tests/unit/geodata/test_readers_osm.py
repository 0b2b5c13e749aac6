"""OSM GeoJSON (osmium export): lots, spaces, chargers and street parking from the tagging rules."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest

from geodata.allowed import evaluate
from geodata.model import Rule
from geodata.readers import open_reader

from .conftest import by_id, read_all

BERLIN = "Europe/Berlin"


@pytest.fixture(scope="module")
def streets():
    _, results = read_all("osm_street.geojson", "osm", dataset="berlin")
    return by_id(results)


@pytest.fixture(scope="module")
def places():
    _, results = read_all("osm_places.geojson", dataset="berlin")
    return by_id(results)


def sides(result):
    return {s.source_feature_id.rsplit(":", 1)[1]: s for s in result.spots}


def test_old_scheme_both_sides_gives_two_curbs_with_the_way_as_geometry(streets):
    left, right = sides(streets["way/1001"])["left"], sides(streets["way/1001"])["right"]

    assert left.kind == right.kind == "curb" and left.orientation == "parallel"
    assert left.geometry.equals(right.geometry)
    assert left.length_m == pytest.approx(67.9, abs=0.1)  # 0.001° of longitude at 52.5°N
    assert left.name == "Ticketstraße (left side)"


def test_conditions_with_a_time_interval_give_a_first_rule_and_a_default(streets):
    both = sides(streets["way/1001"])

    assert both["right"].rules == (
        Rule("Mo-Fr 08:00-18:00", "parking", "public", 120, True),
        Rule(None, "parking", "public", None, False),
    )
    # ":default" set on the left only; the right inherits everything else from "both".
    assert both["left"].rules[1] == Rule(None, "parking", "residents")


def test_ticket_parking_is_allowed_on_weekdays_for_two_hours_and_residents_only_at_night(streets):
    left = sides(streets["way/1001"])["left"]

    assert evaluate(left.rules, datetime(2024, 7, 2, 10, 0), 90, BERLIN).allowed
    assert not evaluate(left.rules, datetime(2024, 7, 2, 10, 0), 150, BERLIN).allowed
    assert not evaluate(left.rules, datetime(2024, 7, 2, 19, 0), 30, BERLIN).allowed


def test_a_side_with_no_parking_gives_no_spot_and_no_condition_means_free_public_parking(streets):
    spots = sides(streets["way/1002"])

    assert set(spots) == {"left"}
    assert spots["left"].orientation == "perpendicular"
    assert spots["left"].rules == (Rule(None, "parking", "public", None, False),)
    assert streets["way/1004"].spots == ()  # fire_lane on both sides
    assert streets["way/1004"].issues == ()


def test_new_scheme_orientation_restrictions_and_maxstay(streets):
    spots = sides(streets["way/1003"])

    assert spots["left"].orientation == spots["right"].orientation == "diagonal"
    assert spots["left"].rules == (Rule(None, "parking", "public", 90, False),)
    assert spots["right"].rules[0] == Rule("Mo-Fr 07:00-09:00", "no_stopping")
    assert not evaluate(spots["right"].rules, datetime(2024, 7, 2, 6, 30), 60, BERLIN).allowed
    assert evaluate(spots["right"].rules, datetime(2024, 7, 2, 9, 0), 60, BERLIN).allowed


def test_new_scheme_side_no_and_limits_in_feet_inches_and_tonnes(streets):
    spots = sides(streets["way/1005"])

    assert set(spots) == {"right"}
    assert spots["right"].max_vehicle_height_m == pytest.approx(2.286)
    assert spots["right"].max_vehicle_weight_kg == 3500


def test_bad_tag_values_reject_the_way_with_the_tag_named(streets):
    height = streets["way/1006"]
    interval = streets["way/1007"]

    assert height.rejected and height.issues[0].field == "maxheight"
    assert height.issues[0].message == "maxheight '2,2 m' is not a number in metres"
    assert interval.rejected and "is not valid opening_hours syntax" in interval.issues[0].message


def test_roads_without_parking_tags_are_skipped_silently(streets):
    assert streets["way/1008"].spots == () and streets["way/1008"].issues == ()


def test_a_parking_garage_with_opening_hours_access_fee_and_a_height_limit(places):
    garage = places["way/2001"].spots[0]

    assert garage.kind == "lot" and garage.geometry.geom_type == "Polygon"
    assert (garage.name, garage.operator, garage.capacity, garage.max_vehicle_height_m) == (
        "Garage Mitte", "Parkhaus GmbH", 240, 2.0)
    assert garage.rules == (Rule("Mo-Sa 07:00-22:00", "parking", "customers", None, True),)


def test_a_public_lot_is_allowed_only_inside_its_opening_hours():
    lot = {"type": "Feature", "id": "n9", "geometry": {"type": "Point", "coordinates": [13.4, 52.5]},
           "properties": {"amenity": "parking", "opening_hours": "Mo-Fr 07:00-20:00"}}
    data = json.dumps({"type": "FeatureCollection", "features": [lot]}).encode()

    spot = next(iter(open_reader(io.BytesIO(data), "osm"))).spots[0]

    assert spot.source_feature_id == "node/9"
    assert evaluate(spot.rules, datetime(2024, 7, 2, 12, 0), 60, BERLIN).allowed
    decision = evaluate(spot.rules, datetime(2024, 7, 2, 19, 30), 60, BERLIN)
    assert not decision.allowed and decision.allowed_until.hour == 20


def test_disabled_spaces_and_private_lots_are_not_public(places):
    assert places["node/2002"].spots[0].kind == "space"
    assert places["node/2002"].spots[0].rules[0].access == "disabled"
    assert places["node/2006"].spots[0].rules[0].access == "private"


def test_a_charging_station_lists_its_sockets_and_its_highest_power(places):
    charger = places["node/2003"].spots[0]

    assert charger.kind == "charger"
    assert charger.connectors == ("chademo", "type2")  # socket:schuko=no is not a connector
    assert charger.power_kw == 50
    assert charger.rules == (Rule(None, "parking", "public", 240, True),)


def test_bad_lot_tags_are_each_reported(places):
    messages = [i.message for i in places["node/2004"].issues]

    assert places["node/2004"].rejected
    assert "capacity 'lots' is not a whole number" in messages
    assert any("opening_hours 'Mo-Fr 8-18h' is not valid" in m for m in messages)


def test_things_that_are_not_parking_are_skipped(places):
    assert places["node/2005"].spots == () and places["node/2005"].issues == ()
