"""Consent per purpose: off until granted, history kept, enforced on telemetry."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from smartsvc.models import OutboxMessage, TelemetryReading
from tests.support.checks import problem
from tests.support.factories import bearer

PURPOSES = ["location", "telemetry", "proactive_push", "partner_sharing"]
READING = {"at": "2026-11-24T10:00:00+01:00", "battery_pct": 40}




def put(client, user, purpose, granted):
    return client.put(f"/v1/me/consents/{purpose}", json={"granted": granted}, headers=user.headers)


def consents(client, user) -> dict:
    response = client.get("/v1/me/consents", headers=user.headers)
    assert response.status_code == 200
    return {c["purpose"]: c for c in response.get_json()["items"]}


def stored(app, model) -> int:
    with app.extensions["smartsvc"].database.session() as session:
        return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def product_id(client, operator_key, user) -> str:
    model = client.post("/v1/catalog/models", headers=bearer(operator_key),
                        json={"kind": "car", "brand": "smart", "name": "fortwo"})
    product = client.post("/v1/me/products", headers=user.headers, json={"model_id": model.get_json()["id"]})
    return product.get_json()["id"]


def test_every_purpose_is_listed_and_off_until_granted(client, user):
    listed = consents(client, user)

    assert sorted(listed) == sorted(PURPOSES)
    for state in listed.values():
        assert state["granted"] is False
        assert state["changed_at"] is None
        assert state["history"] == []


def test_granting_one_purpose_leaves_the_others_off(client, user):
    response = put(client, user, "location", True)

    assert response.status_code == 200
    assert response.get_json()["purpose"] == "location"
    assert response.get_json()["granted"] is True
    listed = consents(client, user)
    assert listed["location"]["granted"] is True
    assert [p for p, s in listed.items() if s["granted"]] == ["location"]


def test_the_history_keeps_every_change_in_order(client, user):
    for granted in (True, False, True):
        assert put(client, user, "telemetry", granted).status_code == 200

    state = consents(client, user)["telemetry"]

    assert [change["granted"] for change in state["history"]] == [True, False, True]
    times = [change["at"] for change in state["history"]]
    assert times == sorted(times)
    assert state["granted"] is True
    assert state["changed_at"] == times[-1]


def test_repeating_the_same_answer_adds_no_history(client, user):
    put(client, user, "location", True)
    put(client, user, "location", True)

    assert len(consents(client, user)["location"]["history"]) == 1


def test_consents_are_per_user(client, user, other_user):
    put(client, user, "partner_sharing", True)

    assert consents(client, other_user)["partner_sharing"]["granted"] is False
    assert consents(client, other_user)["partner_sharing"]["history"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "granted"),
        ({"granted": "yes"}, "granted"),
        ({"granted": "true"}, "granted"),
        ({"granted": None}, "granted"),
        ({"granted": True, "until": "2027-01-01"}, "until"),
    ],
)
def test_bad_consent_bodies_are_422_and_change_nothing(client, user, body, field):
    response = client.put("/v1/me/consents/location", json=body, headers=user.headers)

    problem(response, 422, field)
    assert consents(client, user)["location"]["history"] == []


def test_an_unknown_purpose_is_404(client, user):
    problem(put(client, user, "marketing", True), 404)


def test_telemetry_without_consent_is_403_and_nothing_is_stored(client, app, user, product_id):
    body = problem(client.post(f"/v1/me/products/{product_id}/telemetry", json=READING, headers=user.headers),
                   403, "consent")

    assert "telemetry" in body["detail"]
    assert stored(app, TelemetryReading) == 0
    assert stored(app, OutboxMessage) == 0


def test_withdrawn_consent_is_refused_again(client, app, user, product_id):
    url = f"/v1/me/products/{product_id}/telemetry"
    put(client, user, "telemetry", True)
    assert client.post(url, json=READING, headers=user.headers).status_code == 202

    put(client, user, "telemetry", False)

    problem(client.post(url, json=READING, headers=user.headers), 403, "consent")
    assert stored(app, TelemetryReading) == 1
    assert stored(app, OutboxMessage) == 1
    readings = client.get(url, headers=user.headers).get_json()["items"]
    assert len(readings) == 1


def test_another_purpose_does_not_stand_in_for_telemetry(client, app, user, product_id):
    for purpose in ("location", "proactive_push", "partner_sharing"):
        put(client, user, purpose, True)

    problem(client.post(f"/v1/me/products/{product_id}/telemetry", json=READING, headers=user.headers), 403)
    assert stored(app, TelemetryReading) == 0


def test_consents_need_a_user_token(client, app_key):
    problem(client.get("/v1/me/consents", headers=bearer(app_key)), 403)
    problem(client.put("/v1/me/consents/location", json={"granted": True}), 401)
