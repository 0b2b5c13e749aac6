"""The recipes on live data, on SQLite and PostgreSQL: spots at the destination (as GET /v1/spots answers),
chargers when the battery will not last, workshops when the service is due, messages; nothing when nothing
useful is found."""

from __future__ import annotations

import io
import json
import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from geographiclib.geodesic import Geodesic
from shapely.geometry import LineString, Polygon

from geodata.model import Rate, Rule, Spot
from smartsvc.services.dataset_import import run_import
from smartsvc.services.datasets import create_dataset, publish_dataset
from smartsvc.services.recipes import run_recipe
from tests.support.factories import api_key, bearer, make_user
from tests.support.geodata import store_dataset

HERE = (48.8500, 2.3500)  # the trip's destination, in Paris
TUESDAY_10 = datetime.fromisoformat("2025-06-03T10:00:00+02:00")
FREE = (Rule(None, "parking"),)
PAID = (Rule("Mo-Sa 09:00-20:00", "parking", "public", 120, True, Rate(2.5, 60, "EUR")), Rule(None, "parking"))
SPOTS_PARAMS = {"radius_m": 300, "limit": 5, "duration_min": 60}


def east(metres: float, north: float = 0.0, origin: tuple[float, float] = HERE) -> tuple[float, float]:
    """(lon, lat) so many metres east (and north) of ``origin``."""
    p = Geodesic.WGS84.Direct(origin[0], origin[1], 90, metres)
    if north:
        p = Geodesic.WGS84.Direct(p["lat2"], p["lon2"], 0, north)
    return p["lon2"], p["lat2"]


def street() -> list[Spot]:
    def curb(start: float, length: float, rules, fid: str) -> Spot:
        return Spot(LineString([east(start, 5), east(start + length, 5)]), kind="curb", orientation="parallel",
                    length_m=length, rules=rules, source_feature_id=fid)
    return [curb(20, 5.4, FREE, "gap"), curb(60, 12.0, PAID, "paid"),
            Spot(Polygon([east(150), east(180), east(180, 30), east(150, 30), east(150)]), kind="lot",
                 capacity=120, rules=FREE, source_feature_id="garage"),
            Spot(LineString([east(100, 10), east(100, 12)]), kind="charger", connectors=("type2",), power_kw=11,
                 rules=FREE, source_feature_id="slow-charger")]


def poi(fid: str, metres_east: float, metres_north: float = 0.0, **properties: Any) -> dict[str, Any]:
    lon, lat = east(metres_east, metres_north)
    return {"type": "Feature", "id": fid, "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": properties}


POIS = [
    poi("garage-dupont", 800, category="workshop", name="Garage Dupont", opening_hours="Mo-Fr 08:00-18:00"),
    poi("smart-center", 2500, category="dealer", name="smart Center Paris", brand="smart",
        opening_hours="Mo-Sa 09:00-19:00"),
    poi("far-workshop", 40_000, category="workshop", name="Far away"),
    poi("ionity", -3000, category="charger", name="Ionity A6", connectors=["ccs"], power_kw=350),
    poi("chademo-only", -2000, category="charger", name="Old charger", connectors=["chademo"], power_kw=50),
    poi("bakery", 100, name="Boulangerie"),  # no category: not a workshop
]


def import_pois(app: Any) -> None:
    """The POIs through the real import (upload → normalize → store), then published."""
    container = app.extensions["smartsvc"]
    data = json.dumps({"type": "FeatureCollection", "features": POIS}).encode()
    dataset = create_dataset(container.database, container.settings, io.BytesIO(data), name="pois", layer="pois",
                             fmt="geojson", time_zone="Europe/Paris", file_name="pois.geojson", created_by="test",
                             max_bytes=None, enqueue=False)
    outcome = run_import(container.database, container.settings, dataset.id)
    assert outcome.status == "ready"
    publish_dataset(container.database, dataset.id)


def add_model(client: Any, operator: str, brand: str, name: str, **attributes: Any) -> str:
    response = client.post("/v1/catalog/models", headers=bearer(operator),
                           json={"kind": "car", "brand": brand, "name": name, "attributes": attributes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


@pytest.fixture
def world(db_app, db_client) -> dict[str, Any]:
    operator, app_key = api_key(db_app, "operator"), api_key(db_app, "app")
    alice = make_user(db_client, app_key, "alice", "Europe/Paris")
    smart = add_model(db_client, operator, "smart", "fortwo", length_m=2.69, width_m=1.66, height_m=1.55,
                      weight_kg=1095)
    response = db_client.post("/v1/me/products", json={"model_id": smart}, headers=alice.headers)
    assert response.status_code == 201
    store_dataset(db_app.extensions["smartsvc"].database, street(), time_zone="Europe/Paris")
    import_pois(db_app)
    return {"app": db_app, "client": db_client, "alice": alice, "product": response.get_json()["id"]}


def run(world: dict[str, Any], name: str, params: dict[str, Any], facts: dict[str, Any],
        at: datetime = TUESDAY_10, **fields: Any) -> Any:
    container = world["app"].extensions["smartsvc"]
    trigger = SimpleNamespace(id=uuid.uuid4(), user_id=uuid.UUID(world["alice"].id), at=at,
                              product_id=uuid.UUID(world["product"]), fields=fields)
    with container.database.session() as session:
        return run_recipe(session, container, name, params, facts, trigger)


def smart_facts(**trip: Any) -> dict[str, Any]:
    return {"product": {"brand": "smart", "name": "fortwo", "attributes": {"length_m": 2.69, "width_m": 1.66}},
            "trip": {"id": "trip-1", "destination": {"lat": HERE[0], "lon": HERE[1]}, **trip}}


# --------------------------------------------------------------------------- spots_near_destination


def test_spots_near_the_destination_are_what_get_spots_answers_at_the_eta(world):
    result = run(world, "spots_near_destination", SPOTS_PARAMS, smart_facts(distance_m=1400),
                 at=TUESDAY_10 - timedelta(minutes=5), eta_s=300)

    response = world["client"].get("/v1/spots", headers=world["alice"].headers, query_string={
        "lat": HERE[0], "lon": HERE[1], "radius_m": 300, "product_id": world["product"],
        "at": TUESDAY_10.isoformat(), "duration_min": 60, "limit": 5})
    assert response.status_code == 200
    assert result.payload == {"destination": {"lat": HERE[0], "lon": HERE[1]}, "eta": "2025-06-03T08:00:00+00:00",
                              "spots": response.get_json()["items"]}
    found = [spot["source"]["feature_id"] for spot in result.payload["spots"]]
    assert found == ["gap", "paid", "slow-charger", "garage"]
    assert result.title == "4 spots your smart fortwo fits near your destination"
    assert result.body == "The nearest is 20 m from it: free, parking allowed with no time limit."
    assert result.collapse_key == "spots:trip-1"
    assert result.expires_at == TUESDAY_10 + timedelta(minutes=60)


def test_the_limit_and_the_fee_of_the_nearest_spot_are_said(world):
    params = {**SPOTS_PARAMS, "limit": 1}
    facts = smart_facts()
    facts["trip"]["destination"] = {"lat": east(66)[1], "lon": east(66)[0]}  # at the paid curb
    result = run(world, "spots_near_destination", params, facts)
    assert len(result.payload["spots"]) == 1 and result.title.startswith("1 spot your smart fortwo fits")
    assert result.body == ("The nearest is 5 m from it: paid (2.50 EUR per hour), "
                           "parking allowed until 12:00.")


def test_no_spot_near_the_destination_makes_no_suggestion(world):
    facts = smart_facts()
    facts["trip"]["destination"] = {"lat": 48.90, "lon": 2.40}
    assert run(world, "spots_near_destination", SPOTS_PARAMS, facts) is None


def test_a_vehicle_without_a_length_or_a_trip_without_destination_makes_no_suggestion(world):
    no_length = smart_facts()
    no_length["product"]["attributes"] = {}
    assert run(world, "spots_near_destination", SPOTS_PARAMS, no_length) is None
    assert run(world, "spots_near_destination", SPOTS_PARAMS, {"product": smart_facts()["product"]}) is None


# --------------------------------------------------------------------------- charger_on_route


def ev_facts(battery_pct: float, distance_m: float = 60_000) -> dict[str, Any]:
    start = east(-5000)
    return {"user": {"location": {"lat": start[1], "lon": start[0]}},
            "product": {"brand": "smart", "name": "#1", "attributes": {
                "length_m": 4.27, "powertrain": "bev", "range_km": 200, "connectors": ["ccs", "type2"]},
                "telemetry": {"battery_pct": battery_pct}},
            "trip": {"id": "trip-2", "destination": {"lat": HERE[0], "lon": HERE[1]}, "distance_m": distance_m}}


CHARGER_PARAMS = {"radius_m": 2000, "limit": 3, "reserve_pct": 15, "min_power_kw": 0}


def test_a_battery_that_will_not_last_gets_the_nearest_compatible_chargers(world):
    result = run(world, "charger_on_route", CHARGER_PARAMS, ev_facts(battery_pct=35))  # needs 30 %, keeps 5

    chargers = result.payload["chargers"]
    assert [c["name"] for c in chargers] == ["Ionity A6", None]  # then the parking layer's type2 charger
    assert chargers[0]["connectors"] == ["ccs"] and chargers[0]["power_kw"] == 350
    assert chargers[0]["distance_m"] == pytest.approx(2000, abs=5)
    assert chargers[1]["source"]["feature_id"] == "slow-charger"
    assert "Old charger" not in json.dumps(result.payload)  # CHAdeMO only: the car cannot use it
    assert (result.payload["battery_pct"], result.payload["needed_pct"]) == (35, 30)
    assert result.title == "Charge on the way: your smart #1's battery will not last the trip"
    assert "Nearest charger: Ionity A6, 2.0 km from you, 350 kW (ccs)" in result.body
    assert result.collapse_key == "charger:trip-2"


def test_a_minimum_power_leaves_slow_chargers_out(world):
    result = run(world, "charger_on_route", {**CHARGER_PARAMS, "min_power_kw": 50}, ev_facts(battery_pct=35))
    assert [c["name"] for c in result.payload["chargers"]] == ["Ionity A6"]


def test_a_battery_that_lasts_or_a_combustion_car_gets_nothing(world):
    assert run(world, "charger_on_route", CHARGER_PARAMS, ev_facts(battery_pct=80)) is None
    petrol = ev_facts(battery_pct=10)
    petrol["product"]["attributes"]["powertrain"] = "ice"
    assert run(world, "charger_on_route", CHARGER_PARAMS, petrol) is None


# --------------------------------------------------------------------------- service_due


def service_facts(odometer_km: float) -> dict[str, Any]:
    return {"user": {"location": {"lat": HERE[0], "lon": HERE[1]}},
            "product": {"brand": "smart", "name": "fortwo", "id": "p-1",
                        "attributes": {"length_m": 2.69, "service_interval_km": 15_000},
                        "telemetry": {"odometer_km": odometer_km}}}


SERVICE_PARAMS = {"within_days": 14, "within_km": 1000, "radius_m": 10_000, "limit": 3}


def test_a_service_due_soon_lists_the_nearest_workshops_and_dealers_with_their_hours(world):
    result = run(world, "service_due", SERVICE_PARAMS, service_facts(14_300), at=TUESDAY_10 + timedelta(hours=9))

    places = result.payload["places"]
    assert [p["name"] for p in places] == ["Garage Dupont", "smart Center Paris"]  # not the bakery, not 40 km
    assert places[0]["category"] == "workshop" and places[1]["brand"] == "smart"
    # Tuesday 19:00 in Paris: the workshop has closed (opens Wednesday 08:00), the dealer is open until 19:00.
    assert (places[0]["open_now"], places[0]["next_change"]) == (False, "2025-06-04T08:00:00+02:00")
    assert places[0]["opening_hours"] == "Mo-Fr 08:00-18:00"
    assert result.payload["due"] == {"by": "km", "due_at_km": 15_000, "remaining_km": 700}
    assert result.title == "Your smart fortwo's service is due in 700 km"
    assert result.body == "Nearest workshop: Garage Dupont, 800 m away, closed now; opens tomorrow 08:00."
    assert result.collapse_key.startswith("service:")


def test_when_the_nearest_workshop_is_closed_the_nearest_place_open_then_is_named_too(world):
    # Tuesday 18:30 in Paris: the workshop closed at 18:00, the dealer is open until 19:00.
    result = run(world, "service_due", SERVICE_PARAMS, service_facts(14_300), at=TUESDAY_10 + timedelta(hours=8.5))

    assert [p["open_now"] for p in result.payload["places"]] == [False, True]
    assert result.body == ("Nearest workshop: Garage Dupont, 800 m away, closed now; opens tomorrow 08:00. "
                           "Open now: smart Center Paris (dealer), 2.5 km away, until 19:00.")
    open_hours = run(world, "service_due", SERVICE_PARAMS, service_facts(14_300), at=TUESDAY_10)
    assert open_hours.body == "Nearest workshop: Garage Dupont, 800 m away, open now until 18:00."


def test_a_service_not_due_or_no_workshop_nearby_makes_no_suggestion(world):
    assert run(world, "service_due", SERVICE_PARAMS, service_facts(5_000)) is None
    assert run(world, "service_due", {**SERVICE_PARAMS, "radius_m": 500}, service_facts(14_300)) is None


# --------------------------------------------------------------------------- message


def test_a_message_fills_its_placeholders_and_is_not_sent_when_one_is_missing(world):
    params = {"title": "Battery at {product.telemetry.battery_pct} %", "body": "Charge your {product.name}."}
    result = run(world, "message", params, ev_facts(battery_pct=12.5))
    assert (result.title, result.body) == ("Battery at 12.5 %", "Charge your #1.")
    assert run(world, "message", params, smart_facts()) is None
