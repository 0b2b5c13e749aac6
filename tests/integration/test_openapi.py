"""The committed OpenAPI document is the one the app serves, and it covers the contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

COMMITTED = Path(__file__).resolve().parents[2] / "api_spec" / "openapi.json"

# API.md paths this part of the service implements, with their methods.
CONTRACT = {
    "/v1/health": {"get"},
    "/v1/ready": {"get"},
    "/v1/users": {"post"},
    "/v1/users/{user_id}/tokens": {"post"},
    "/v1/me": {"get", "patch"},
    "/v1/me/consents": {"get"},
    "/v1/me/consents/{purpose}": {"put"},
    "/v1/me/devices": {"get", "post"},
    "/v1/me/devices/{device_id}": {"delete"},
    "/v1/catalog/models": {"get", "post"},
    "/v1/me/products": {"get", "post"},
    "/v1/me/products/{product_id}": {"get", "delete"},
    "/v1/me/products/{product_id}/telemetry": {"post"},
    "/v1/keys": {"post"},
    "/v1/datasets": {"get", "post"},
    "/v1/datasets/{dataset_id}": {"get", "delete"},
    "/v1/datasets/{dataset_id}/publish": {"post"},
    "/v1/collections": {"get"},
    "/v1/collections/{layer}/items": {"get"},
    "/v1/spots": {"get"},
    "/v1/geofences": {"get", "post"},
    "/v1/geofences/{geofence_id}": {"get", "patch", "delete"},
    "/v1/rules": {"get", "post"},
    "/v1/rules/{rule_id}": {"get", "patch", "delete"},
}


@pytest.fixture
def served(client) -> dict:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_committed_document_equals_served_one(served):
    assert COMMITTED.exists(), f"{COMMITTED} is missing: run `make openapi` and commit it"
    committed = json.loads(COMMITTED.read_text())
    assert committed == served, (
        "api_spec/openapi.json is out of date with the code: run `make openapi` and commit the result"
    )


@pytest.mark.parametrize("path", sorted(CONTRACT))
def test_contract_path_is_documented_with_schemas(served, path):
    operations = served["paths"].get(path)
    assert operations is not None, f"{path} (API.md) is missing from the OpenAPI document"
    for method in sorted(CONTRACT[path]):
        operation = operations.get(method)
        assert operation is not None, f"{method.upper()} {path} (API.md) is missing from the OpenAPI document"
        successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        assert successes, f"{method.upper()} {path} documents no success response"
        for code, response in successes.items():
            if code != "204":
                assert "schema" in response.get("content", {}).get("application/json", {}), (
                    f"{method.upper()} {path} {code} documents no JSON response schema"
                )
        bodiless = {"/v1/users/{user_id}/tokens", "/v1/datasets/{dataset_id}/publish"}
        if method in {"post", "put", "patch"} and path not in bodiless:
            assert "requestBody" in operation, f"{method.upper()} {path} documents no request body"
