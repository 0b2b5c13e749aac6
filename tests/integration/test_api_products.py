"""Catalogue models, owned products and their telemetry."""

from __future__ import annotations

import uuid

import pytest

from smartsvc.models import OwnedProduct, ProductModel, TelemetryReading
from tests.support.checks import count, problem
from tests.support.factories import api_key, bearer, grant, make_app, make_settings, make_user

FORTWO = {
    "kind": "car", "brand": "smart", "name": "fortwo EQ",
    "attributes": {"length_m": 2.69, "width_m": 1.66, "height_m": 1.55, "weight_kg": 1095,
                   "powertrain": "bev", "connectors": ["type2", "ccs"], "battery_kwh": 17.6,
                   "range_km": 133, "service_interval_km": 20000},
}
READING = {"at": "2026-11-24T10:00:00+01:00", "battery_pct": 40}






@pytest.fixture
def model_id(client, operator_key) -> str:
    response = client.post("/v1/catalog/models", json=FORTWO, headers=bearer(operator_key))
    assert response.status_code == 201
    return response.get_json()["id"]


@pytest.fixture
def product_id(client, user, model_id) -> str:
    response = client.post("/v1/me/products", json={"model_id": model_id, "nickname": "Fred"}, headers=user.headers)
    assert response.status_code == 201
    return response.get_json()["id"]


# --- catalogue -----------------------------------------------------------------------------

def test_an_operator_adds_a_model_and_everyone_can_read_it(client, app, operator_key, user):
    created = client.post("/v1/catalog/models", json=FORTWO, headers=bearer(operator_key))

    assert created.status_code == 201
    body = created.get_json()
    assert body["attributes"] == FORTWO["attributes"]
    for token in (user.token, api_key(app, "partner"), api_key(app, "agent"), api_key(app, "app")):
        one = client.get(f"/v1/catalog/models/{body['id']}", headers=bearer(token))
        assert one.status_code == 200 and one.get_json() == body
        assert client.get("/v1/catalog/models", headers=bearer(token)).get_json()["items"] == [body]


def test_a_model_without_attributes_gets_an_empty_object(client, operator_key):
    response = client.post("/v1/catalog/models", json={"kind": "bicycle", "brand": "b", "name": "n"},
                           headers=bearer(operator_key))

    assert response.status_code == 201
    assert response.get_json()["attributes"] == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**FORTWO, "kind": "spaceship"}, "kind"),
        ({k: v for k, v in FORTWO.items() if k != "brand"}, "brand"),
        ({**FORTWO, "name": ""}, "name"),
        ({**FORTWO, "colour": "red"}, "colour"),
        ({**FORTWO, "attributes": {"length_m": -2.69}}, "attributes.length_m"),
        ({**FORTWO, "attributes": {"length_m": 0}}, "attributes.length_m"),
        ({**FORTWO, "attributes": {"length_m": "short"}}, "attributes.length_m"),
        ({**FORTWO, "attributes": {"length_m": 2.69, "lenght_m": 2.69}}, "attributes.lenght_m"),
        ({**FORTWO, "attributes": {"powertrain": "steam"}}, "attributes.powertrain"),
        ({**FORTWO, "attributes": {"connectors": ["type2", "usb"]}}, "attributes.connectors.1"),
        ({**FORTWO, "attributes": {"connectors": "type2"}}, "attributes.connectors"),
        ({**FORTWO, "attributes": [1, 2]}, "attributes"),
    ],
)
def test_bad_models_are_422_naming_the_field_and_store_nothing(client, app, operator_key, body, field):
    problem(client.post("/v1/catalog/models", json=body, headers=bearer(operator_key)), 422, field)

    assert count(app, ProductModel) == 0


@pytest.mark.parametrize("role", ["app", "partner", "agent"])
def test_only_operators_add_models(client, app, role):
    problem(client.post("/v1/catalog/models", json=FORTWO, headers=bearer(api_key(app, role))), 403)
    assert count(app, ProductModel) == 0


def test_models_can_be_filtered_by_kind(client, operator_key, model_id):
    scooter = client.post("/v1/catalog/models", json={"kind": "scooter", "brand": "x", "name": "y"},
                          headers=bearer(operator_key)).get_json()

    cars = client.get("/v1/catalog/models?kind=car", headers=bearer(operator_key)).get_json()["items"]
    scooters = client.get("/v1/catalog/models?kind=scooter", headers=bearer(operator_key)).get_json()["items"]

    assert [m["id"] for m in cars] == [model_id]
    assert [m["id"] for m in scooters] == [scooter["id"]]
    problem(client.get("/v1/catalog/models?kind=boat", headers=bearer(operator_key)), 422, "kind")


def test_an_unknown_model_is_404(client, user):
    problem(client.get(f"/v1/catalog/models/{uuid.uuid4()}", headers=user.headers), 404)


def test_models_page_with_cursors(client, operator_key):
    ids = [client.post("/v1/catalog/models", json={**FORTWO, "name": f"m{n}"},
                       headers=bearer(operator_key)).get_json()["id"] for n in range(3)]

    first = client.get("/v1/catalog/models?limit=2", headers=bearer(operator_key)).get_json()
    rest = client.get("/v1/catalog/models", query_string={"limit": 2, "cursor": first["next_cursor"]},
                      headers=bearer(operator_key)).get_json()

    assert [m["id"] for m in first["items"] + rest["items"]] == ids
    assert rest["next_cursor"] is None


def test_a_model_created_with_an_idempotency_key_is_created_once(client, app, operator_key):
    headers = {**bearer(operator_key), "Idempotency-Key": "model-fortwo"}
    first = client.post("/v1/catalog/models", json=FORTWO, headers=headers)
    again = client.post("/v1/catalog/models", json=FORTWO, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.get_json()["id"] == first.get_json()["id"]
    assert count(app, ProductModel) == 1


# --- owned products --------------------------------------------------------------------------

def test_a_user_adds_reads_and_removes_a_product(client, user, model_id):
    created = client.post("/v1/me/products", json={"model_id": model_id, "nickname": "Fred"}, headers=user.headers)

    assert created.status_code == 201
    body = created.get_json()
    assert body["model_id"] == model_id
    assert body["model"]["attributes"]["length_m"] == 2.69
    assert body["nickname"] == "Fred"
    assert body["latest_telemetry"] == {}
    assert client.get(f"/v1/me/products/{body['id']}", headers=user.headers).get_json() == body
    assert client.get("/v1/me/products", headers=user.headers).get_json() == {"items": [body], "next_cursor": None}

    assert client.delete(f"/v1/me/products/{body['id']}", headers=user.headers).status_code == 204
    problem(client.get(f"/v1/me/products/{body['id']}", headers=user.headers), 404)
    assert client.get("/v1/me/products", headers=user.headers).get_json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "model_id"),
        ({"model_id": "fortwo"}, "model_id"),
        ({"model_id": 7}, "model_id"),
        ({"model_id": str(uuid.uuid4())}, "model_id"),  # not in the catalogue
        ({"model_id": "MODEL", "nickname": "n" * 101}, "nickname"),
        ({"model_id": "MODEL", "vin": "WME4530421Y123456"}, "vin"),
    ],
)
def test_bad_product_bodies_are_422_naming_the_field_and_store_nothing(client, app, user, model_id, body, field):
    body = {k: (model_id if v == "MODEL" else v) for k, v in body.items()}

    problem(client.post("/v1/me/products", json=body, headers=user.headers), 422, field)

    assert count(app, OwnedProduct) == 0


def test_another_users_product_is_404_for_every_operation_and_survives(client, app, user, other_user, product_id):
    for method, path in [("get", ""), ("delete", ""), ("get", "/telemetry")]:
        problem(getattr(client, method)(f"/v1/me/products/{product_id}{path}", headers=other_user.headers), 404)
    grant(client, other_user, "telemetry")
    problem(client.post(f"/v1/me/products/{product_id}/telemetry", json=READING, headers=other_user.headers), 404)

    assert client.get(f"/v1/me/products/{product_id}", headers=user.headers).status_code == 200
    assert client.get("/v1/me/products", headers=other_user.headers).get_json()["items"] == []
    assert count(app, TelemetryReading) == 0


@pytest.mark.parametrize("method", ["get", "delete"])
def test_an_unknown_product_is_404(client, user, method):
    problem(getattr(client, method)(f"/v1/me/products/{uuid.uuid4()}", headers=user.headers), 404)


def test_the_number_of_products_per_user_is_capped(tmp_path):
    app = make_app(make_settings(tmp_path / "var", max_products_per_user=1))
    client = app.test_client()
    model = client.post("/v1/catalog/models", json=FORTWO, headers=bearer(api_key(app, "operator"))).get_json()
    user = make_user(client, api_key(app, "app"), "collector")
    assert client.post("/v1/me/products", json={"model_id": model["id"]}, headers=user.headers).status_code == 201

    problem(client.post("/v1/me/products", json={"model_id": model["id"]}, headers=user.headers), 422, "model_id")

    assert count(app, OwnedProduct) == 1


def test_a_product_added_with_an_idempotency_key_is_added_once(client, app, user, model_id):
    headers = {**user.headers, "Idempotency-Key": "add-fortwo"}
    first = client.post("/v1/me/products", json={"model_id": model_id}, headers=headers)
    again = client.post("/v1/me/products", json={"model_id": model_id}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.get_json()["id"] == first.get_json()["id"]
    assert count(app, OwnedProduct) == 1


# --- telemetry ---------------------------------------------------------------------------------

def test_telemetry_is_accepted_with_consent_and_listed(client, user, product_id):
    grant(client, user, "telemetry")
    url = f"/v1/me/products/{product_id}/telemetry"

    response = client.post(url, headers=user.headers, json={
        "at": "2026-11-24T10:00:00+01:00", "odometer_km": 12345.6, "battery_pct": 40,
        "service_due_at": "2027-03-01T00:00:00Z", "tire_pressure_bar": [2.1, 2.1, 2.3, 2.3],
    })

    assert response.status_code == 202
    assert response.get_json()["status"] == "accepted"
    readings = client.get(url, headers=user.headers).get_json()
    assert readings["next_cursor"] is None
    [reading] = readings["items"]
    assert reading["id"] == response.get_json()["id"]
    assert reading["odometer_km"] == 12345.6
    assert reading["tire_pressure_bar"] == [2.1, 2.1, 2.3, 2.3]
    assert reading["at"].startswith("2026-11-24T09:00:00")  # the same instant, in UTC
    assert reading["processed_at"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"battery_pct": 40}, "at"),
        ({"at": "2026-11-24T10:00:00", "battery_pct": 40}, "at"),  # no offset
        ({"at": "yesterday", "battery_pct": 40}, "at"),
        ({"at": "2026-11-24T10:00:00+01:00"}, "body"),  # no measurement
        ({**READING, "battery_pct": 101}, "battery_pct"),
        ({**READING, "battery_pct": "full"}, "battery_pct"),
        ({**READING, "fuel_pct": -1}, "fuel_pct"),
        ({**READING, "odometer_km": -5}, "odometer_km"),
        ({**READING, "tire_pressure_bar": []}, "tire_pressure_bar"),
        ({**READING, "tire_pressure_bar": [2.2] * 9}, "tire_pressure_bar"),
        ({**READING, "tire_pressure_bar": [2.2, "flat"]}, "tire_pressure_bar.1"),
        ({**READING, "service_due_at": "2027-03-01"}, "service_due_at"),
        ({**READING, "speed_kmh": 50}, "speed_kmh"),
    ],
)
def test_bad_telemetry_is_422_naming_the_field_and_stores_nothing(client, app, user, product_id, body, field):
    grant(client, user, "telemetry")

    problem(client.post(f"/v1/me/products/{product_id}/telemetry", json=body, headers=user.headers), 422, field)

    assert count(app, TelemetryReading) == 0


def test_telemetry_for_an_unknown_product_is_404(client, user):
    grant(client, user, "telemetry")
    problem(client.post(f"/v1/me/products/{uuid.uuid4()}/telemetry", json=READING, headers=user.headers), 404)


def test_removing_a_product_removes_its_telemetry(client, app, user, product_id):
    grant(client, user, "telemetry")
    client.post(f"/v1/me/products/{product_id}/telemetry", json=READING, headers=user.headers)

    assert client.delete(f"/v1/me/products/{product_id}", headers=user.headers).status_code == 204

    assert count(app, TelemetryReading) == 0
    problem(client.get(f"/v1/me/products/{product_id}/telemetry", headers=user.headers), 404)
