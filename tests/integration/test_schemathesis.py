"""Property-based API tests: schemathesis against the app's own OpenAPI document.

Every operation of ``GET /v1/openapi.json`` gets generated requests — valid
and invalid — sent in-process over WSGI with the credential that operation is
for, and every response goes through all of schemathesis' checks: no 5xx,
status codes, content types, headers and bodies as documented, invalid data
rejected, valid data accepted, authentication not ignored.

The app is built once for this module, at import, on a fresh SQLite database
in a temporary folder, with a key per role, a user and a few objects: pytest
then gets one test per operation, and schemathesis' explicit cases (built
while pytest collects) carry real credentials.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import available_timezones

import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation

from smartsvc.app import create_app
from smartsvc.http.idempotency import HEADER as IDEMPOTENCY_KEY
from smartsvc.http.idempotency import _KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from smartsvc.migrate import upgrade
from smartsvc.http.collections import BBOX_PATTERN
from smartsvc.services.geofence_input import GeofenceRejected, validate_geofence
from tests.support.factories import api_key, bearer, grant, make_settings, make_user
from tests.support.geodata import fixture_spots, store_dataset
from tests.support.rules import align_event_facts, example_rule, within_budgets

_VAR_DIR = Path(tempfile.mkdtemp(prefix="smartsvc-schemathesis-"))
atexit.register(shutil.rmtree, _VAR_DIR, ignore_errors=True)

APP = create_app(make_settings(
    _VAR_DIR,
    # generated requests create many devices and products for one user
    max_devices_per_user=1000,
    max_products_per_user=10_000,
))
# Strings without NUL: the API refuses U+0000 anywhere (422 naming the field;
# PostgreSQL cannot store it), a rule JSON Schema has no keyword for short of
# a pattern on every string. Lone surrogates are already excluded (utf-8 codec).
#
# Creating and changing rules skip the coverage phase (fuzzing, valid and invalid, still
# runs them): it enumerates every keyword of every leaf branch at each of the 40 positions
# of the unrolled condition tree — some 32,000 cases per operation, minutes to collect
# and hours to send. The rule language has its own unit tests and tests/integration/test_api_rules.py
# names every refusal.
RULE_WRITES = ["POST /v1/rules", "PATCH /v1/rules/{rule_id}"]
CONFIG = schemathesis.Config.from_dict({
    "generation": {"allow-x00": False},
    "operations": [{"include-name": RULE_WRITES, "phases": {"coverage": {"enabled": False}}}],
})
schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", APP, config=CONFIG)

# The document marks time zones with a named format; teach the generator its values.
schemathesis.openapi.format("iana-time-zone", st.sampled_from(sorted(available_timezones())))

load_all_checks()
ALL_CHECKS = [CHECKS.get_one(name) for name in CHECKS.get_all_names()]

# Role -> bearer token, and ids of objects that exist (so that valid requests
# also reach the success paths); filled below, once the hooks are in place.
_TOKENS: dict[str, str] = {}
_KNOWN: dict[str, str] = {}


def role_for(method: str, path: str) -> str | None:
    """The credential an operation is documented for (``None``: no auth)."""
    if path in {"/v1/health", "/v1/ready", "/v1/openapi.json"}:
        return None
    if path == "/v1/me" or path.startswith("/v1/me/") or path == "/v1/spots":
        return "user"
    if path.startswith("/v1/users"):
        return "app"
    if path == "/v1/help" or path.startswith("/v1/help/"):
        return "agent"
    return "operator"  # /v1/keys, /v1/catalog/models (POST is operator-only; GET allows any)


@schema.auth(refresh_interval=None)
class BearerByOperation:
    """Authenticate each generated request with the credential its operation expects."""

    def get(self, case, context):
        role = role_for(context.operation.method.upper(), context.operation.path)
        return _TOKENS.get(role) if role else None

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half of the well-formed ids become ones that exist (reads and updates only).

    DELETE keeps random ids: it must not remove the objects (or the operator
    key) the other operations rely on.
    """
    operation = context.operation
    if not path_parameters or operation is None or operation.method.upper() == "DELETE":
        return st.just(path_parameters)
    known = {name: _KNOWN[name] for name, value in path_parameters.items()
             if name in _KNOWN and _is_uuid(value)}
    return st.sampled_from([path_parameters, {**path_parameters, **known}])


# Where the live parking layer's spots are (the normalized fixture, loaded below).
SPOTS_AT = {"lat": 48.85, "lon": 2.3505}


def _in_range(value: object, limit: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return False
    try:
        return -limit <= float(value) <= limit
    except ValueError:
        return False


@schema.hook
def flatmap_query(context, query):
    """Spot searches also run for the caller's own product near the live spots; bboxes run south to north.

    A well-formed product id is replaced by the caller's product half of the
    time (ids of existing objects are state no schema can express), and valid
    coordinates then move to where the spots are, so that fit and allowed-now
    run on generated times, durations, radii and limits. A bbox's minLat ≤
    maxLat is a rule across its values that no JSON Schema can express: the
    generated latitudes are put in order (the API tests cover the reverse).
    """
    operation = context.operation
    if not query or operation is None:
        return st.just(query)
    bbox = query.get("bbox")
    if isinstance(bbox, str) and re.match(BBOX_PATTERN, bbox):
        west, south, east, north = bbox.split(",")
        if float(south) > float(north):
            query = {**query, "bbox": ",".join((west, north, east, south))}
    if operation.path != "/v1/spots" or not _is_uuid(query.get("product_id")):
        return st.just(query)
    own = {**query, "product_id": _KNOWN["product_id"]}
    if _in_range(query.get("lat"), 90) and _in_range(query.get("lon"), 180):
        own.update(SPOTS_AT)
    return st.sampled_from([query, own])


def _create_credentials_and_objects() -> None:
    """Migrate; create a key per role, a user with every consent, a model, a product.

    Done at import, not in a fixture: schemathesis builds its explicit
    (coverage-phase) cases while pytest collects, and they need real tokens.
    """
    upgrade(APP.extensions["smartsvc"].database)
    for role in ("operator", "app", "agent"):
        _TOKENS[role] = api_key(APP, role, f"schemathesis {role}")
    client = APP.test_client()
    user = make_user(client, _TOKENS["app"], "schemathesis-user")
    _TOKENS["user"] = user.token
    grant(client, user, "telemetry", "location", "proactive_push", "partner_sharing")
    model = client.post("/v1/catalog/models", headers=bearer(_TOKENS["operator"]),
                        json={"kind": "car", "brand": "smart", "name": "fortwo", "attributes": {"length_m": 2.69}})
    assert model.status_code == 201, model.get_json()
    product = client.post("/v1/me/products", headers=user.headers, json={"model_id": model.get_json()["id"]})
    assert product.status_code == 201, product.get_json()
    spare_key = client.post("/v1/keys", headers=bearer(_TOKENS["operator"]), json={"role": "partner", "name": "spare"})
    assert spare_key.status_code == 201, spare_key.get_json()
    fence = client.post("/v1/geofences", headers=bearer(_TOKENS["operator"]),
                        json={"name": "known", "center": {"lat": 48.85, "lon": 2.35}, "radius_m": 200})
    assert fence.status_code == 201, fence.get_json()
    _KNOWN.update(user_id=user.id, model_id=model.get_json()["id"], product_id=product.get_json()["id"],
                  key_id=spare_key.get_json()["id"], geofence_id=fence.get_json()["id"])
    store_dataset(APP.extensions["smartsvc"].database, fixture_spots())
    rule = client.post("/v1/rules", headers=bearer(_TOKENS["operator"]), json=example_rule())
    assert rule.status_code == 201, rule.get_json()
    _KNOWN["rule_id"] = rule.get_json()["id"]
    _KNOWN["suggestion_id"] = _known_suggestion(user.id, _KNOWN["rule_id"])
    hook = client.post("/v1/webhooks", headers=bearer(_TOKENS["operator"]),
                       json={"url": PUBLIC_WEBHOOK_URL, "event_types": ["webhook.test"]})
    assert hook.status_code == 201, hook.get_json()
    _KNOWN["webhook_id"] = hook.get_json()["id"]
    test = client.post(f"/v1/webhooks/{_KNOWN['webhook_id']}/test", headers=bearer(_TOKENS["operator"]))
    _KNOWN["delivery_id"] = test.get_json()["id"]
    case = client.post("/v1/me/help", headers=user.headers, json={"topic": "schemathesis", "message": "schemathesis"})
    assert case.status_code == 201, case.get_json()
    _KNOWN["case_id"] = case.get_json()["id"]


def _known_suggestion(user_id: str, rule_id: str) -> str:
    """A suggestion for the user, as the engine makes them (feedback and reads reach their success paths)."""
    from smartsvc.services.proposals import Proposal, RecipeResult
    from smartsvc.services.suggestions import propose

    proposal = Proposal(user_id=uuid.UUID(user_id), kind="message", dedupe_key=f"schemathesis:{rule_id}",
                        content=RecipeResult(title="Known", body="a suggestion", payload={"n": 1}),
                        reason={"rule": {"id": rule_id, "name": "known"}}, rule_id=uuid.UUID(rule_id))
    with APP.extensions["smartsvc"].database.unit_of_work() as uow:
        suggestion_id = str(propose(uow, proposal).id)
        uow.commit()
    return suggestion_id


# A public address written as an IP: accepted without a DNS lookup (nothing is sent: no worker runs here).
PUBLIC_WEBHOOK_URL = "https://93.184.215.14/hook"

_create_credentials_and_objects()


@schema.hook
def filter_body(context, body):
    """Rules stay within their budgets of tree nodes and bytes.

    The document bounds a tree's depth, the children of each node and every
    value, but the total of nodes and the size of a rule's JSON are sums over
    the whole body that JSON Schema cannot express; bodies past them are not
    generated (the API and unit tests cover the 422).
    """
    operation = context.operation
    if operation is None or not operation.path.startswith("/v1/rules") or not isinstance(body, dict):
        return True
    return within_budgets(body)


def _aligned_rule_body(case) -> None:
    """A valid rule body uses only the ``event.*`` facts its trigger provides (for a change: the stored trigger).

    Which event facts a rule may use depends on its trigger — and for a PATCH
    on the rule as stored — a rule across fields and state that the document
    states in words only. In valid bodies, leaves and placeholders on event
    facts the trigger lacks are replaced by neutral ones (tests/support/rules.py);
    invalid bodies are sent as generated. The API tests cover the mismatch.
    """
    meta = case.meta
    body_mode = meta.components.get(ParameterLocation.BODY) if meta else None
    if not isinstance(case.body, dict) or (body_mode is not None and body_mode.mode.is_negative):
        return
    stored = None
    if case.method.upper() == "PATCH" and (case.path_parameters or {}).get("rule_id") == _KNOWN["rule_id"]:
        response = APP.test_client().get(f"/v1/rules/{_KNOWN['rule_id']}", headers=bearer(_TOKENS["operator"]))
        stored = response.get_json()
    case.body = align_event_facts(case.body, stored)


NEGATIVE_DATA_REJECTION = CHECKS.get_one("negative_data_rejection")

# What a valid geofence area and schedule look like (see make_geofence_semantically_valid).
VALID_AREA = {"type": "Polygon", "coordinates": [[[2.34, 48.85], [2.36, 48.85], [2.36, 48.86], [2.34, 48.86],
                                                  [2.34, 48.85]]]}
VALID_SCHEDULE = "Mo-Fr 08:00-18:00"


def make_geofence_semantically_valid(case) -> None:
    """In a schema-valid geofence body, an area or a schedule the API rightly refuses becomes a valid one.

    A GeoJSON polygon the document describes (rings of 4+ positions of
    numbers) is usually not an area: random rings cross themselves, collapse
    to nothing, leave the globe or span a continent; a random string is not an
    opening_hours expression. Those are rules no JSON Schema can express, so
    the API answers 422 naming geometry or schedule, which schemathesis reads
    as valid data rejected. Positive cases get a valid area / schedule in
    their place (judged by the API's own validator), so that every other
    generated field reaches the success path; invalid geometries and schedules
    are covered by tests/integration/test_api_geofences.py, and negative cases
    are sent as generated.
    """
    body = case.body
    meta = case.meta
    if (not case.operation.path.startswith("/v1/geofences") or not isinstance(body, dict)
            or meta is None or not meta.generation.mode.is_positive):
        return
    probe: dict = {"name": "probe", "center": {"lat": 0, "lon": 0}, "radius_m": 100}
    if isinstance(body.get("geometry"), dict):
        probe = {"name": "probe", "geometry": body["geometry"]}
    if isinstance(body.get("schedule"), str):
        probe["schedule"] = body["schedule"]
    try:
        validate_geofence(probe)
    except GeofenceRejected as rejected:
        replacements = {"geometry": VALID_AREA, "schedule": VALID_SCHEDULE}
        case.body = {**body, **{name: value for name, value in replacements.items() if name in rejected.errors}}


def make_context_events_valid(case) -> None:
    """In a positive context batch, times ahead of the clock become now and product ids the user's own.

    "At most 5 minutes in the future" depends on the clock and "one of your
    products" on stored state: no JSON Schema says either, so the API's 422s
    would read as valid data rejected. tests/integration/test_api_context.py
    covers both refusals; negative cases are sent as generated.
    """
    body, meta = case.body, case.meta
    if (case.operation.path != "/v1/me/context" or not isinstance(body, dict) or meta is None
            or not meta.generation.mode.is_positive or not isinstance(body.get("events"), list)):
        return
    now = datetime.now(timezone.utc)
    events = []
    for event in body["events"]:
        if isinstance(event, dict):
            event = dict(event)
            try:
                ahead = datetime.fromisoformat(str(event.get("at"))) > now
            except (ValueError, TypeError):  # not a time, or one without an offset: sent as generated
                ahead = False
            if ahead:
                event["at"] = now.isoformat()
            if _is_uuid(event.get("product_id")):
                event["product_id"] = _KNOWN["product_id"]
        events.append(event)
    case.body = {**body, "events": events}


def make_webhook_body_valid(case) -> None:
    """In a positive webhook body, the URL becomes a public one and ``since`` is not in the future.

    Whether a URL may be called depends on where its host resolves (public
    addresses only) — DNS, not something a JSON Schema says, and a lookup of a
    generated host would leave the machine; a recover ``since`` in the future
    is refused by the clock. tests/integration/test_api_webhooks.py covers both
    refusals; negative cases are sent as generated (they fail before any lookup).
    """
    body, meta = case.body, case.meta
    if (not case.operation.path.startswith("/v1/webhooks") or not isinstance(body, dict) or meta is None
            or not meta.generation.mode.is_positive):
        return
    if "url" in body:
        body = {**body, "url": PUBLIC_WEBHOOK_URL}
    try:
        since = datetime.fromisoformat(str(body.get("since")))
    except ValueError:
        since = None
    if since is not None and since.tzinfo is not None and since > datetime.now(timezone.utc):
        body = {**body, "since": datetime.now(timezone.utc).isoformat()}
    case.body = body


def checks_for(case) -> list:
    """Every check, except negative_data_rejection for a multipart body that only the body makes invalid.

    Multipart carries text and bytes, no JSON types: a name mutated to the
    integer 5 arrives as the text "5", a valid name. schemathesis tries to
    tell such cases apart by validating the body as sent, but that fails on
    every upload (jsonschema_rs refuses its ``Binary`` file value: "Unsupported
    type", so nothing is ever "valid as sent"), and it validates against a
    rewritten name pattern (``^[ws]*[^ws]`` plus maxLength becomes
    ``^[ws]{0,199}[^ws]$``, which refuses "abc"). So the check would fail on
    a correct API at random. Invalid upload fields are covered by
    tests/integration/test_datasets.py (422 naming each field); every other
    check, positive data acceptance included, still runs on uploads.
    """
    meta = case.meta
    negated = {location for location, info in meta.components.items() if info.mode.is_negative} if meta else set()
    if (case.media_type or "").startswith("multipart/") and negated == {ParameterLocation.BODY}:
        return [check for check in ALL_CHECKS if check is not NEGATIVE_DATA_REJECTION]
    return ALL_CHECKS


@schema.parametrize()
# CI runs a fixed set of examples (a red CI blocks landing); local runs explore new ones each time.
@settings(max_examples=50, deadline=None, derandomize=bool(os.environ.get("CI")), suppress_health_check=list(HealthCheck), print_blob=True)
def test_api_conforms_to_its_openapi_document(case):
    body = case.body
    if isinstance(body, dict) and _is_uuid(body.get("model_id")):
        # An owned product names an existing catalogue model. A well-formed id
        # of a model that does not exist is refused with 422 naming model_id
        # (API.md: bad input is 422 with the field named); the document cannot
        # say which ids exist, so well-formed ones become a real one (the API
        # tests cover the unknown model).
        case.body = {**body, "model_id": _KNOWN["model_id"]}
    if case.operation.path == "/v1/me/help" and isinstance(body, dict) and _is_uuid(body.get("product_id")):
        case.body = {**body, "product_id": _KNOWN["product_id"]}  # likewise: a help case names one of my products
    make_geofence_semantically_valid(case)
    make_context_events_valid(case)
    make_webhook_body_valid(case)
    key = (case.headers or {}).get(IDEMPOTENCY_KEY)
    if isinstance(key, str) and re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        # Hypothesis repeats small values ("0") across examples, and a key used
        # again with another body is rightly refused (422, as the IETF
        # Idempotency-Key draft says) — state no schema can express. Valid keys
        # are made unique; invalid ones are sent as generated.
        case.headers[IDEMPOTENCY_KEY] = f"{key[:150].rstrip()}-{uuid.uuid4().hex}"
    if case.operation.path.startswith("/v1/rules"):
        _aligned_rule_body(case)
    case.call_and_validate(checks=checks_for(case))
