"""The normalized spot survives a trip through its stored properties unchanged."""

from __future__ import annotations

import json

from shapely.geometry import LineString

from geodata.model import Rate, Rule, Spot


def test_a_spot_round_trips_through_its_normalized_properties():
    spot = Spot(
        LineString([(2.35, 48.85), (2.3501, 48.85)]),
        kind="curb",
        orientation="parallel",
        length_m=7.34,
        max_vehicle_height_m=2.1,
        max_vehicle_weight_kg=3500,
        capacity=2,
        rules=(Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True, Rate(2.5, 60, "EUR")), Rule(None, "no_parking")),
        connectors=("type2",),
        power_kw=22.0,
        name="Rue X",
        operator="City",
        source_dataset="paris",
        source_feature_id="42",
    )

    stored = json.loads(json.dumps(spot.to_feature()))
    again = Spot.from_feature(stored)

    assert stored["properties"]["rules"][0] == {
        "when": "Mo-Sa 09:00-20:00", "activity": "parking", "access": "public", "max_stay_min": 120, "fee": True,
        "rate": {"amount": 2.5, "per_min": 60, "currency": "EUR"},
    }
    assert stored["properties"]["source"] == {"dataset": "paris", "feature_id": "42"}
    assert "max_vehicle_width_m" not in stored["properties"]
    assert again.to_properties() == spot.to_properties()
    assert again.geometry.equals(spot.geometry)
    assert again.rules == spot.rules


def test_rule_words_for_a_rate():
    assert Rate(0.5, 15, "USD").describe() == "0.50 USD per 15 min"
    assert Rate(2, 60).describe() == "2.00 per hour"
