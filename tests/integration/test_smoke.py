"""A first end-to-end pass through the platform on SQLite."""

from tests.support.factories import bearer, grant


def test_user_adds_product_and_reports_telemetry(client, operator_key, user):
    model = client.post("/v1/catalog/models", headers=bearer(operator_key), json={
        "kind": "car", "brand": "smart", "name": "fortwo",
        "attributes": {"length_m": 2.69, "width_m": 1.66, "powertrain": "bev", "connectors": ["type2"]},
    })
    assert model.status_code == 201, model.get_json()
    product = client.post("/v1/me/products", headers=user.headers, json={"model_id": model.get_json()["id"]})
    assert product.status_code == 201, product.get_json()
    product_id = product.get_json()["id"]
    refused = client.post(f"/v1/me/products/{product_id}/telemetry", headers=user.headers,
                          json={"at": "2026-11-24T10:00:00+01:00", "battery_pct": 40})
    assert refused.status_code == 403
    grant(client, user, "telemetry")
    accepted = client.post(f"/v1/me/products/{product_id}/telemetry", headers=user.headers,
                           json={"at": "2026-11-24T10:00:00+01:00", "battery_pct": 40})
    assert accepted.status_code == 202, accepted.get_json()
    readings = client.get(f"/v1/me/products/{product_id}/telemetry", headers=user.headers).get_json()
    assert [r["battery_pct"] for r in readings["items"]] == [40]
