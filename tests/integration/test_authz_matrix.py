"""Who may call what: every route × method × caller against a table of expected outcomes.

A route added to the app without a row here fails ``test_every_route_is_in_the_table``,
so new endpoints are checked for broken object-level authorization (BOLA) and roles too.
Another user's object is 404 (never 403, never 2xx); a wrong role is 403; no or a bad
credential is 401.
"""

from __future__ import annotations

import io
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from smartsvc.credentials import AccessTokens
from smartsvc.services.dataset_import import run_import
from smartsvc.services.keys import create_key, revoke_key
from smartsvc.services.proposals import Proposal, RecipeResult
from smartsvc.services.suggestions import propose
from tests.support.factories import bearer, grant, make_app, make_settings, make_user
from tests.support.rules import example_rule

OK, UNAUTHENTICATED, FORBIDDEN, NOT_FOUND = "2xx", 401, 403, 404

# Callers whose outcome the table spells out.
KEY_ROLES = ("operator", "partner", "app", "agent")
CALLERS = ("anonymous", *KEY_ROLES, "owner", "other_user")
# Callers that must always be treated exactly like "anonymous".
UNTRUSTED = ("forged_token", "revoked_key", "garbage_token")
# Callers that must never see the owner's ids or personal data in a 2xx answer.
NOSY = ("other_user", "partner")


def _expect(default: Any, **outcomes: Any) -> dict[str, Any]:
    table = {caller: default for caller in CALLERS}
    table.update(outcomes)
    return table


PUBLIC = _expect(OK)
ANY_CREDENTIAL = _expect(OK, anonymous=UNAUTHENTICATED)
OPERATOR = _expect(FORBIDDEN, anonymous=UNAUTHENTICATED, operator=OK)
APP_OR_OPERATOR = _expect(FORBIDDEN, anonymous=UNAUTHENTICATED, operator=OK, app=OK)
# /v1/me/...: each user reaches their own (so another user gets 2xx with *their* data).
OWN = _expect(FORBIDDEN, anonymous=UNAUTHENTICATED, owner=OK, other_user=OK)
# /v1/me/.../{id} with the owner's id: another user must get 404.
OWNED_OBJECT = _expect(FORBIDDEN, anonymous=UNAUTHENTICATED, owner=OK, other_user=NOT_FOUND)
# Webhooks: partner or operator keys, each its own endpoints (the matrix's belongs to the partner key).
WEBHOOK_KEYS = _expect(FORBIDDEN, anonymous=UNAUTHENTICATED, operator=OK, partner=OK)
PARTNERS_WEBHOOK = _expect(FORBIDDEN, anonymous=UNAUTHENTICATED, partner=OK, operator=NOT_FOUND)
# Help cases for support agents: agent keys only (a user token, even the owner's, is 403).
AGENT = _expect(FORBIDDEN, anonymous=UNAUTHENTICATED, agent=OK)
HELP_CASE_RULE = "/v1/me/help/<uuid:case_id>"
AGENT_CASE_RULE = "/v1/help/<uuid:case_id>"
WEBHOOK_RULE = "/v1/webhooks/<uuid:webhook_id>"

CONSENT_RULE = "/v1/me/consents/<any(location, telemetry, proactive_push, partner_sharing):purpose>"
COLLECTION_RULE = "/v1/collections/<any(parking, pois, geofences):layer>"

TABLE: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/health", "GET"): PUBLIC,
    ("/v1/ready", "GET"): PUBLIC,
    ("/v1/users", "GET"): APP_OR_OPERATOR,
    ("/v1/users", "POST"): APP_OR_OPERATOR,
    ("/v1/users/<uuid:user_id>", "GET"): APP_OR_OPERATOR,
    ("/v1/users/<uuid:user_id>/tokens", "POST"): APP_OR_OPERATOR,
    ("/v1/me", "GET"): OWN,
    ("/v1/me", "PATCH"): OWN,
    ("/v1/me", "DELETE"): OWN,
    ("/v1/me/consents", "GET"): OWN,
    (CONSENT_RULE, "PUT"): OWN,
    ("/v1/me/devices", "GET"): OWN,
    ("/v1/me/devices", "POST"): OWN,
    ("/v1/me/devices/<uuid:device_id>", "DELETE"): OWNED_OBJECT,
    ("/v1/catalog/models", "GET"): ANY_CREDENTIAL,
    ("/v1/catalog/models", "POST"): OPERATOR,
    ("/v1/catalog/models/<uuid:model_id>", "GET"): ANY_CREDENTIAL,
    ("/v1/me/products", "GET"): OWN,
    ("/v1/me/products", "POST"): OWN,
    ("/v1/me/products/<uuid:product_id>", "GET"): OWNED_OBJECT,
    ("/v1/me/products/<uuid:product_id>", "DELETE"): OWNED_OBJECT,
    ("/v1/me/products/<uuid:product_id>/telemetry", "GET"): OWNED_OBJECT,
    ("/v1/me/products/<uuid:product_id>/telemetry", "POST"): OWNED_OBJECT,
    ("/v1/keys", "GET"): OPERATOR,
    ("/v1/keys", "POST"): OPERATOR,
    ("/v1/keys/<uuid:key_id>", "GET"): OPERATOR,
    ("/v1/keys/<uuid:key_id>", "DELETE"): OPERATOR,
    ("/v1/datasets", "GET"): OPERATOR,
    ("/v1/datasets", "POST"): OPERATOR,
    ("/v1/datasets/<uuid:dataset_id>", "GET"): OPERATOR,
    ("/v1/datasets/<uuid:dataset_id>", "DELETE"): OPERATOR,
    ("/v1/datasets/<uuid:dataset_id>/publish", "POST"): OPERATOR,
    ("/v1/collections", "GET"): ANY_CREDENTIAL,
    (COLLECTION_RULE, "GET"): ANY_CREDENTIAL,
    (COLLECTION_RULE + "/items", "GET"): ANY_CREDENTIAL,
    # The query names the owner's product: another user's search is 404.
    ("/v1/spots", "GET"): OWNED_OBJECT,
    ("/v1/geofences", "GET"): OPERATOR,
    ("/v1/geofences", "POST"): OPERATOR,
    ("/v1/geofences/<uuid:geofence_id>", "GET"): OPERATOR,
    ("/v1/geofences/<uuid:geofence_id>", "PATCH"): OPERATOR,
    ("/v1/geofences/<uuid:geofence_id>", "DELETE"): OPERATOR,
    ("/v1/rules", "GET"): OPERATOR,
    ("/v1/rules", "POST"): OPERATOR,
    ("/v1/rules/<uuid:rule_id>", "GET"): OPERATOR,
    ("/v1/rules/<uuid:rule_id>", "PATCH"): OPERATOR,
    ("/v1/rules/<uuid:rule_id>", "DELETE"): OPERATOR,
    ("/v1/me/context", "GET"): OWN,
    ("/v1/me/context", "POST"): OWN,
    ("/v1/me/suggestions", "GET"): OWN,
    ("/v1/me/suggestions/<uuid:suggestion_id>", "GET"): OWNED_OBJECT,
    ("/v1/me/suggestions/<uuid:suggestion_id>/feedback", "POST"): OWNED_OBJECT,
    ("/v1/me/interactions", "GET"): OWN,
    ("/v1/me/sharing", "GET"): OWN,
    ("/v1/me/export", "GET"): OWN,
    ("/v1/webhooks", "GET"): WEBHOOK_KEYS,
    ("/v1/webhooks", "POST"): WEBHOOK_KEYS,
    (WEBHOOK_RULE, "GET"): PARTNERS_WEBHOOK,
    (WEBHOOK_RULE, "PATCH"): PARTNERS_WEBHOOK,
    (WEBHOOK_RULE, "DELETE"): PARTNERS_WEBHOOK,
    (WEBHOOK_RULE + "/deliveries", "GET"): PARTNERS_WEBHOOK,
    (WEBHOOK_RULE + "/deliveries/<uuid:delivery_id>/retry", "POST"): PARTNERS_WEBHOOK,
    (WEBHOOK_RULE + "/recover", "POST"): PARTNERS_WEBHOOK,
    (WEBHOOK_RULE + "/rotate-secret", "POST"): PARTNERS_WEBHOOK,
    (WEBHOOK_RULE + "/test", "POST"): PARTNERS_WEBHOOK,
    ("/v1/me/help", "GET"): OWN,
    ("/v1/me/help", "POST"): OWN,
    (HELP_CASE_RULE, "GET"): OWNED_OBJECT,
    (HELP_CASE_RULE + "/messages", "POST"): OWNED_OBJECT,
    ("/v1/help", "GET"): AGENT,
    (AGENT_CASE_RULE, "GET"): AGENT,
    (AGENT_CASE_RULE + "/messages", "POST"): AGENT,
    (AGENT_CASE_RULE, "PATCH"): AGENT,
}

_unique = itertools.count()


class Form(dict):
    """A multipart/form-data body (the others are JSON)."""


SPOT_FILE = b'{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "s1", ' \
            b'"geometry": {"type": "Point", "coordinates": [2.35, 48.85]}, ' \
            b'"properties": {"kind": "space", "rules": [{"activity": "parking"}]}}]}'


def dataset_form() -> Form:
    return Form(file=(io.BytesIO(SPOT_FILE), "spots.geojson"), name=f"matrix {next(_unique)}", layer="parking")

# Valid bodies, so that an allowed caller really gets a 2xx.
BODIES: dict[tuple[str, str], Callable[[], Any]] = {
    ("/v1/users", "POST"): lambda: {"external_id": f"matrix-{next(_unique)}", "time_zone": "UTC"},
    ("/v1/me", "PATCH"): lambda: {"locale": "de-DE"},
    (CONSENT_RULE, "PUT"): lambda: {"granted": True},
    ("/v1/me/devices", "POST"): lambda: {"platform": "fcm", "token": f"device-token-{next(_unique)}"},
    ("/v1/catalog/models", "POST"): lambda: {"kind": "car", "brand": "smart", "name": f"m{next(_unique)}"},
    ("/v1/me/products", "POST"): lambda: {"model_id": WORLD_MODEL_ID[0]},
    ("/v1/me/products/<uuid:product_id>/telemetry", "POST"): lambda: {
        "at": "2026-11-24T10:00:00+01:00", "battery_pct": 55,
    },
    ("/v1/keys", "POST"): lambda: {"role": "agent", "name": f"matrix {next(_unique)}"},
    ("/v1/datasets", "POST"): dataset_form,
    ("/v1/geofences", "POST"): lambda: geofence_body(),  # defined below
    ("/v1/geofences/<uuid:geofence_id>", "PATCH"): lambda: {"name": f"renamed {next(_unique)}", "radius_m": 80,
                                                            "center": {"lat": 48.85, "lon": 2.35}},
    ("/v1/rules", "POST"): lambda: example_rule(name=f"matrix rule {next(_unique)}"),
    ("/v1/rules/<uuid:rule_id>", "PATCH"): lambda: {"priority": next(_unique) % 1000},
    ("/v1/me/suggestions/<uuid:suggestion_id>/feedback", "POST"): lambda: {"action": "opened"},
    # An activity (no consent needed); its own time each call, so that it is never a duplicate.
    ("/v1/me/context", "POST"): lambda: {"events": [{"type": "activity", "value": "walking",
                                                     "at": f"2026-01-01T10:00:{next(_unique) % 60:02d}+00:00"}]},
    # A public address written as an IP: registering it needs no DNS, and no worker runs here to call it.
    ("/v1/webhooks", "POST"): lambda: {"url": "https://93.184.215.14/hook", "event_types": ["webhook.test"]},
    (WEBHOOK_RULE, "PATCH"): lambda: {"description": f"matrix {next(_unique)}"},
    (WEBHOOK_RULE + "/recover", "POST"): lambda: {"since": "2026-01-01T00:00:00+00:00"},
    ("/v1/me/help", "POST"): lambda: {"topic": "matrix", "message": f"matrix help {next(_unique)}"},
    (HELP_CASE_RULE + "/messages", "POST"): lambda: {"text": f"matrix message {next(_unique)}"},
    (AGENT_CASE_RULE + "/messages", "POST"): lambda: {"text": "matrix answer", "guidance": {"screen": "home"}},
    (AGENT_CASE_RULE, "PATCH"): lambda: {"status": "closed"},
}
WORLD_MODEL_ID: list[str] = []


def geofence_body() -> dict[str, Any]:
    return {"name": f"matrix fence {next(_unique)}", "center": {"lat": 48.85, "lon": 2.35}, "radius_m": 100}

# Valid query strings, for routes that need one.
QUERIES: dict[tuple[str, str], Callable[["World"], dict[str, Any]]] = {
    ("/v1/spots", "GET"): lambda world: {"lat": 48.85, "lon": 2.35, "product_id": world.product_id},
}

EXCLUDED_ENDPOINTS = ("static", "api-docs.")


@dataclass
class World:
    """One app with real objects of a user ("owner") and callers of every kind."""

    app: Any
    client: Any
    tokens: dict[str, str | None]
    owner: Any
    other: Any
    model_id: str
    product_id: str
    device_id: str
    reading_id: str
    private_ids: set[str] = field(default_factory=set)
    dataset_id: str = ""  # imported (ready), so that publishing it succeeds
    geofence_id: str = ""
    rule_id: str = ""
    suggestion_id: str = ""
    webhook_id: str = ""  # the partner key's, with one delivery (a test event)
    webhook_delivery_id: str = ""
    help_case_id: str = ""  # the owner's

    def fresh_device(self) -> str:
        response = self.client.post("/v1/me/devices", json={"platform": "apns", "token": f"t-{next(_unique)}"},
                                    headers=self.owner.headers)
        return response.get_json()["id"]

    def fresh_product(self) -> str:
        response = self.client.post("/v1/me/products", json={"model_id": self.model_id}, headers=self.owner.headers)
        return response.get_json()["id"]

    def fresh_key(self) -> str:
        return str(create_key(self.app.extensions["smartsvc"].database, "agent", "to revoke").key.id)

    def fresh_dataset(self) -> str:
        response = self.client.post("/v1/datasets", data=dataset_form(), content_type="multipart/form-data",
                                    headers=bearer(self.tokens["operator"] or ""))
        assert response.status_code == 202, response.get_json()
        return response.get_json()["id"]

    def fresh_geofence(self) -> str:
        response = self.client.post("/v1/geofences", json=geofence_body(),
                                    headers=bearer(self.tokens["operator"] or ""))
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def fresh_rule(self) -> str:
        response = self.client.post("/v1/rules", json=example_rule(name=f"matrix rule {next(_unique)}"),
                                    headers=bearer(self.tokens["operator"] or ""))
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def fresh_webhook(self) -> str:
        response = self.client.post("/v1/webhooks", json=BODIES[("/v1/webhooks", "POST")](),
                                    headers=bearer(self.tokens["partner"] or ""))
        assert response.status_code == 201, response.get_json()
        return response.get_json()["id"]

    def path_value(self, name: str, method: str) -> str:
        """A real id for a path parameter; destructive calls get a fresh object each time."""
        destructive = method == "DELETE"
        if name == "user_id":
            return self.owner.id
        if name == "model_id":
            return self.model_id
        if name == "purpose":
            return "location"
        if name == "device_id":
            return self.fresh_device() if destructive else self.device_id
        if name == "product_id":
            return self.fresh_product() if destructive else self.product_id
        if name == "key_id":
            return self.fresh_key()
        if name == "dataset_id":
            return self.fresh_dataset() if destructive else self.dataset_id
        if name == "layer":
            return "parking"
        if name == "geofence_id":
            return self.fresh_geofence() if destructive else self.geofence_id
        if name == "rule_id":
            return self.fresh_rule() if destructive else self.rule_id
        if name == "suggestion_id":
            return self.suggestion_id
        if name == "webhook_id":
            return self.fresh_webhook() if destructive else self.webhook_id
        if name == "case_id":
            return self.help_case_id
        if name == "delivery_id":
            return self.webhook_delivery_id
        raise AssertionError(f"the matrix does not know how to fill <{name}>; teach World.path_value")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    app = make_app(make_settings(tmp_path_factory.mktemp("matrix") / "var"))
    client = app.test_client()
    database = app.extensions["smartsvc"].database
    keys = {role: create_key(database, role, f"matrix {role}").plaintext for role in KEY_ROLES}
    owner = make_user(client, keys["app"], "matrix-owner")
    other = make_user(client, keys["app"], "matrix-other")
    grant(client, owner, "telemetry")
    grant(client, other, "telemetry")
    model_id = client.post("/v1/catalog/models", headers=bearer(keys["operator"]),
                           json={"kind": "car", "brand": "smart", "name": "fortwo", "attributes": {"length_m": 2.69}},
                           ).get_json()["id"]
    WORLD_MODEL_ID[:] = [model_id]
    product_id = client.post("/v1/me/products", json={"model_id": model_id}, headers=owner.headers).get_json()["id"]
    device_id = client.post("/v1/me/devices", json={"platform": "fcm", "token": "owner-phone-token"},
                            headers=owner.headers).get_json()["id"]
    reading_id = client.post(f"/v1/me/products/{product_id}/telemetry", headers=owner.headers,
                             json={"at": "2026-11-24T10:00:00+01:00", "battery_pct": 40}).get_json()["id"]
    revoked = create_key(database, "operator", "matrix revoked")
    revoke_key(database, revoked.key.id)
    forged = AccessTokens("not-the-server-secret-0123456789abcdef012", 3600).issue(uuid.UUID(owner.id), 0)
    tokens: dict[str, str | None] = {
        "anonymous": None, **keys, "owner": owner.token, "other_user": other.token,
        "forged_token": forged, "revoked_key": revoked.plaintext, "garbage_token": "ssk_" + "0" * 43,
    }
    world = World(app=app, client=client, tokens=tokens, owner=owner, other=other, model_id=model_id,
                  product_id=product_id, device_id=device_id, reading_id=reading_id,
                  private_ids={owner.id, product_id, device_id, reading_id, "owner-phone-token", "matrix-owner"})
    world.dataset_id = world.fresh_dataset()
    run_import(database, app.extensions["smartsvc"].settings, uuid.UUID(world.dataset_id))
    world.geofence_id = world.fresh_geofence()
    world.rule_id = world.fresh_rule()
    world.suggestion_id = owner_suggestion(app, owner, world.rule_id)
    world.private_ids.add(world.suggestion_id)
    world.webhook_id = world.fresh_webhook()
    world.webhook_delivery_id = client.post(f"/v1/webhooks/{world.webhook_id}/test",
                                            headers=bearer(keys["partner"])).get_json()["id"]
    world.help_case_id = client.post("/v1/me/help", json={"topic": "matrix", "message": "matrix"}, headers=owner.headers).get_json()["id"]
    world.private_ids.add(world.help_case_id)
    return world


def owner_suggestion(app, owner, rule_id: str) -> str:
    """A suggestion for the owner, as the engine makes them."""
    proposal = Proposal(user_id=uuid.UUID(owner.id), kind="message", dedupe_key=f"matrix:{rule_id}",
                        content=RecipeResult(title="Matrix", body="for the owner only", payload={}),
                        reason={"rule": {"id": rule_id, "name": "matrix"}}, rule_id=uuid.UUID(rule_id))
    with app.extensions["smartsvc"].database.unit_of_work() as uow:
        suggestion_id = str(propose(uow, proposal).id)
        uow.commit()
    return suggestion_id


def _routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(EXCLUDED_ENDPOINTS):
            continue
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):  # walked separately below
                routes.add((rule.rule, method))
    return routes


def _rule(app, rule_text: str):
    return next(rule for rule in app.url_map.iter_rules() if rule.rule == rule_text)


def _call(world: World, rule_text: str, method: str, caller: str):
    rule = _rule(world.app, rule_text)
    values = {name: world.path_value(name, method) for name in rule.arguments}
    path = rule.build(values, append_unknown=False)[1]
    token = world.tokens[caller]
    if (rule_text, method) == ("/v1/me", "DELETE") and caller in ("owner", "other_user"):
        # Erasing the owner would leave the rest of the matrix without one: a fresh user is erased instead.
        token = make_user(world.client, world.tokens["app"], f"matrix-erased-{uuid.uuid4()}").token
    headers = bearer(token) if token else {}
    body = BODIES.get((rule_text, method if method != "HEAD" else "GET"))
    kwargs: dict[str, Any] = {"headers": headers}
    query = QUERIES.get((rule_text, method if method != "HEAD" else "GET"))
    if query is not None:
        kwargs["query_string"] = query(world)
    if body is not None:
        value = body()
        if isinstance(value, Form):
            kwargs.update(data=dict(value), content_type="multipart/form-data")
        else:
            kwargs["json"] = value
    return path, world.client.open(path, method=method, **kwargs)


def _outcome(status: int) -> Any:
    return OK if 200 <= status < 300 else status


def test_every_route_is_in_the_table(world):
    in_app = _routes(world.app)

    missing = sorted(in_app - set(TABLE))
    stale = sorted(set(TABLE) - in_app)

    assert not missing, f"routes without an authorization row in TABLE: {missing}"
    assert not stale, f"TABLE rows for routes the app no longer has: {stale}"


@pytest.mark.parametrize(("rule_text", "method"), sorted(TABLE), ids=lambda v: str(v))
def test_route_answers_each_caller_as_the_table_says(world, rule_text, method):
    expected = TABLE[(rule_text, method)]
    methods = [method, "HEAD"] if method == "GET" else [method]
    mismatches = []
    for verb, caller in itertools.product(methods, (*CALLERS, *UNTRUSTED)):
        want = expected[caller] if caller in CALLERS else expected["anonymous"]
        path, response = _call(world, rule_text, verb, caller)
        got = _outcome(response.status_code)
        if got != want:
            mismatches.append(f"{verb} {path} as {caller}: expected {want}, got {response.status_code} "
                              f"{response.get_data(as_text=True)[:200]}")
            continue
        if response.status_code >= 400 and verb != "HEAD":
            assert response.mimetype == "application/problem+json", (verb, path, caller)
        if got == OK and caller in NOSY and verb != "HEAD":
            leaked = [i for i in world.private_ids if i in response.get_data(as_text=True)]
            assert not leaked, f"{verb} {path} as {caller} shows the owner's {leaked}"
    assert not mismatches, "\n".join(mismatches)


def test_options_reveals_nothing_to_anyone(world):
    for rule_text, _method in sorted(TABLE):
        rule = _rule(world.app, rule_text)
        path = rule.build({n: world.path_value(n, "GET") for n in rule.arguments}, append_unknown=False)[1]
        for caller in (*CALLERS, *UNTRUSTED):
            token = world.tokens[caller]
            response = world.client.options(path, headers=bearer(token) if token else {})
            assert response.status_code < 300, (path, caller, response.status_code)
            assert response.get_data() == b"", (path, caller)


def test_the_owners_objects_survived_everyone_elses_attempts(world):
    """The matrix never touched the shared objects with a destructive call."""
    client, owner = world.client, world.owner

    assert client.get(f"/v1/me/products/{world.product_id}", headers=owner.headers).status_code == 200
    devices = client.get("/v1/me/devices?limit=500", headers=owner.headers).get_json()["items"]
    assert world.device_id in {d["id"] for d in devices}
