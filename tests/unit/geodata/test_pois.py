"""Points of interest keep what the recipes need through the readers: category, opening hours, brand."""

from __future__ import annotations

import io
import json

from geodata.model import Spot
from geodata.readers import ReadOptions, open_reader


def read(features: list[dict], fmt: str) -> list:
    data = json.dumps({"type": "FeatureCollection", "features": features}).encode()
    return list(open_reader(io.BytesIO(data), fmt, ReadOptions()))


def point(properties: dict, fid: str = "p1", lon: float = 2.35, lat: float = 48.85) -> dict:
    return {"type": "Feature", "id": fid, "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": properties}


def test_a_geojson_workshop_keeps_its_category_hours_and_brand_and_is_no_parking_spot():
    [result] = read([point({"category": "Workshop", "name": "Garage Dupont", "brand": "smart",
                            "opening_hours": "Mo-Fr 08:00-18:00"})], "geojson")
    [spot] = result.spots
    assert (spot.category, spot.name, spot.brand, spot.opening_hours) == (
        "workshop", "Garage Dupont", "smart", "Mo-Fr 08:00-18:00")
    assert spot.kind is None and spot.rules == ()
    assert not result.issues  # a place needs no parking rules: no "no rules" warning
    properties = spot.to_properties()
    assert properties["category"] == "workshop" and properties["opening_hours"] == "Mo-Fr 08:00-18:00"
    again = Spot.from_properties(properties, spot.geometry)
    assert (again.category, again.brand, again.opening_hours) == ("workshop", "smart", "Mo-Fr 08:00-18:00")


def test_unreadable_hours_or_an_unknown_category_are_dropped_with_a_warning_not_the_place():
    [result] = read([point({"category": "bakery", "name": "x", "opening_hours": "Mo-Fr 8-18h"})], "geojson")
    [spot] = result.spots
    assert spot.category is None and spot.opening_hours is None
    assert {issue.field for issue in result.issues} >= {"category", "opening_hours"}
    assert all(issue.level == "warning" for issue in result.issues)


def test_a_charger_category_makes_a_charger():
    [result] = read([point({"category": "charger", "connectors": ["ccs", "type2"], "power_kw": 150})], "geojson")
    [spot] = result.spots
    assert spot.kind == "charger" and spot.connectors == ("ccs", "type2") and spot.power_kw == 150


def test_parking_spots_store_the_same_properties_as_before():
    [result] = read([point({"kind": "space", "rules": [{"activity": "parking"}]})], "geojson")
    properties = result.spots[0].to_properties()
    assert not {"category", "opening_hours", "brand"} & set(properties)


def test_osm_repair_shops_and_car_dealers_are_workshops_and_dealers():
    results = read([
        point({"shop": "car_repair", "name": "Kfz Meier", "opening_hours": "Mo-Fr 07:30-17:00"}, "n1"),
        point({"shop": "car", "name": "smart Center", "brand": "smart"}, "n2"),
        point({"amenity": "charging_station", "socket:type2_combo": "2", "brand": "Ionity",
               "opening_hours": "24/7"}, "n3"),
        point({"shop": "bakery"}, "n4"),
    ], "osm")
    spots = {r.feature_id: r.spots for r in results}
    workshop, dealer, charger = spots["node/1"][0], spots["node/2"][0], spots["node/3"][0]
    assert (workshop.category, workshop.name, workshop.opening_hours) == ("workshop", "Kfz Meier",
                                                                          "Mo-Fr 07:30-17:00")
    assert (dealer.category, dealer.brand) == ("dealer", "smart")
    assert (charger.kind, charger.category, charger.brand, charger.opening_hours) == (
        "charger", "charger", "Ionity", "24/7")
    assert spots["node/4"] == ()


def test_a_csv_dealer_keeps_its_category_and_hours():
    data = b"lat,lon,name,category,brand,opening_hours\n48.85,2.35,smart Center,dealer,smart,Mo-Sa 09:00-19:00\n"
    [result] = list(open_reader(io.BytesIO(data), "csv", ReadOptions()))
    [spot] = result.spots
    assert (spot.category, spot.brand, spot.opening_hours, spot.kind) == ("dealer", "smart", "Mo-Sa 09:00-19:00",
                                                                          None)
