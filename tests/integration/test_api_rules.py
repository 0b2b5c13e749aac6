"""Rules (operator) over HTTP on SQLite and PostgreSQL: create, read, list, change, delete — and every refusal named.

The rule language itself (every operator, fact, limit) is unit-tested in
tests/unit/rules; here: that the API stores exactly what it accepts, names
each problem by its path, re-judges a whole rule on PATCH, writes nothing
when it refuses, and keeps the version counter and the per-process cache honest.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, select

from smartsvc.models import Rule, RuleVersion, User, UserRuleScore
from smartsvc.services.rule_set import RuleCache
from smartsvc.services.rules import rule_version
from tests.integration.conftest import close_app
from tests.support.checks import count, problem
from tests.support.factories import api_key, bearer, make_app, make_user
from tests.support.rules import SMALL_SPOTS, example_rule


@pytest.fixture
def operator(db_app) -> dict[str, str]:
    return bearer(api_key(db_app, "operator"))


def create(client: Any, headers: dict[str, str], body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
    response = client.post("/v1/rules", json=body, headers=headers)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def version(app: Any) -> int:
    with app.extensions["smartsvc"].database.session() as session:
        return rule_version(session)


# --------------------------------------------------------------------------- create and read


def test_the_example_rule_is_created_and_read_back(db_client, operator):
    response = db_client.post("/v1/rules", json=SMALL_SPOTS, headers=operator)

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == f"/v1/rules/{body['id']}"
    assert {key: body[key] for key in SMALL_SPOTS} == SMALL_SPOTS
    assert body["created_by"].startswith("key:") and body["created_at"] == body["updated_at"]
    assert db_client.get(f"/v1/rules/{body['id']}", headers=operator).get_json() == body


def test_a_minimal_rule_is_stored_with_its_defaults(db_client, operator):
    body = create(db_client, operator, {"name": "Battery low", "action": {"recipe": "charger_on_route"},
                                        "trigger": {"event": "telemetry.threshold", "op": "<", "value": 20,
                                                    "fact": "product.telemetry.battery_pct"}})

    assert body["trigger"] == {"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "<",
                               "value": 20}
    assert body["conditions"] == {"all": []}
    assert body["action"] == {"recipe": "charger_on_route",
                              "params": {"radius_m": 2000, "limit": 3, "reserve_pct": 15, "min_power_kw": 0}}
    assert (body["priority"], body["cooldown_s"], body["enabled"]) == (0, 3600, True)


def test_a_message_rule_with_placeholders_is_accepted(db_client, operator):
    rule = example_rule(
        trigger={"event": "geofence.dwelled", "tag": "city-centre"},
        conditions={"any": [{"fact": "event.dwell_s", "op": ">=", "value": 900},
                            {"not": {"fact": "geofence.metadata.free", "op": "==", "value": True}}]},
        action={"recipe": "message", "params": {"title": "Parked {event.dwell_s} s",
                                                "body": "Zone {geofence.tag}: {geofence.metadata.rate}/h"}},
    )

    assert create(db_client, operator, rule)["conditions"] == rule["conditions"]


def test_a_rule_created_with_an_idempotency_key_is_created_once(db_client, db_app, operator):
    headers = {**operator, "Idempotency-Key": "rule-small-spots"}

    first = db_client.post("/v1/rules", json=SMALL_SPOTS, headers=headers)
    again = db_client.post("/v1/rules", json=SMALL_SPOTS, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert count(db_app, Rule) == 1


@pytest.mark.parametrize("role", ["app", "partner", "agent"])
def test_only_operators_manage_rules(db_client, db_app, role):
    problem(db_client.post("/v1/rules", json=SMALL_SPOTS, headers=bearer(api_key(db_app, role))), 403)
    assert count(db_app, Rule) == 0


def test_a_user_token_cannot_manage_rules(db_client, db_app):
    user = make_user(db_client, api_key(db_app, "app"), "alice")

    problem(db_client.get("/v1/rules", headers=user.headers), 403)


# --------------------------------------------------------------------------- refusals, each named


def without(field: str) -> dict[str, Any]:
    return {key: value for key, value in SMALL_SPOTS.items() if key != field}


LEAF = {"fact": "product.attributes.length_m", "op": "<=", "value": 3.0}


def conditions(*leaves: Any) -> dict[str, Any]:
    return example_rule(conditions={"all": list(leaves)})


def trigger(**fields: Any) -> dict[str, Any]:
    return example_rule(trigger=fields)


def params(recipe: str, **values: Any) -> dict[str, Any]:
    return example_rule(action={"recipe": recipe, "params": values})


REFUSED = [
    # the rule's own fields (checked by the request schema)
    pytest.param(without("name"), "name", id="name missing"),
    pytest.param(example_rule(name="   "), "name", id="name blank"),
    pytest.param(example_rule(name="x" * 201), "name", id="name too long"),
    pytest.param(without("trigger"), "trigger", id="trigger missing"),
    pytest.param(without("action"), "action", id="action missing"),
    pytest.param(example_rule(priority=2.5), "priority", id="priority not an integer"),
    pytest.param(example_rule(priority=5000), "priority", id="priority out of range"),
    pytest.param(example_rule(cooldown_s=-1), "cooldown_s", id="cooldown negative"),
    pytest.param(example_rule(enabled="yes"), "enabled", id="enabled not a boolean"),
    pytest.param(example_rule(conditions=None), "conditions", id="conditions null"),
    pytest.param({**SMALL_SPOTS, "cooldown": 60}, "cooldown", id="unknown field"),
    # the trigger
    pytest.param(example_rule(trigger="trip.approaching"), "trigger", id="trigger not an object"),
    pytest.param(trigger(event="trip.approached"), "trigger.event", id="unknown trigger event"),
    pytest.param(trigger(event="trip.approaching"), "trigger", id="approaching without distance or time"),
    pytest.param(trigger(event="trip.approaching", within_m=10), "trigger.within_m", id="within_m out of range"),
    pytest.param(trigger(event="trip.started", within_m=500), "trigger.within_m", id="field of another trigger"),
    pytest.param(trigger(event="telemetry.threshold", fact="product.telemetry.battery_pct", op="<", value=150),
                 "trigger.value", id="threshold beyond 100 %"),
    pytest.param(trigger(event="schedule", at="9h"), "trigger.at", id="schedule time not HH:MM"),
    pytest.param(trigger(event="schedule", at="09:00", weekdays=[1, 8]), "trigger.weekdays", id="weekday 8"),
    # the conditions
    pytest.param(conditions({"fact": "product.atributes.length_m", "op": "<=", "value": 3}),
                 "conditions.all.0.fact", id="unknown fact"),
    pytest.param(conditions(LEAF, {"fact": "user.weekday", "op": "=~", "value": 6}), "conditions.all.1.op",
                 id="unknown op"),
    pytest.param(conditions({"fact": "product.attributes.length_m", "op": "<", "value": "3 m"}),
                 "conditions.all.0.value", id="number fact compared with text"),
    pytest.param(conditions({"fact": "product.brand", "op": "<", "value": "m"}), "conditions.all.0.op",
                 id="ordering on text"),
    pytest.param(conditions({"fact": "product.attributes.powertrain", "op": "in", "value": "bev"}),
                 "conditions.all.0.value", id="in without a list"),
    pytest.param(conditions({"fact": "user.local_time", "op": ">=", "value": "25:00"}),
                 "conditions.all.0.value", id="time out of range"),
    pytest.param(conditions({"fact": "user.weekday", "op": "exists", "value": 1}), "conditions.all.0.value",
                 id="exists with a value"),
    pytest.param(conditions({"any": []}), "conditions.all.0.any", id="empty any"),
    pytest.param(conditions({"all": [], "any": [LEAF]}), "conditions.all.0", id="two combinators"),
    pytest.param(conditions({"fact": "event.dwell_s", "op": ">", "value": 60}), "conditions.all.0.fact",
                 id="event fact of another trigger"),
    pytest.param(example_rule(conditions={"all": [{"any": [{"all": [{"not": LEAF}]}]}]}),
                 "conditions.all.0.any.0.all.0", id="too deep"),
    pytest.param(example_rule(conditions={"all": [LEAF] * 17}), "conditions.all", id="too many children"),
    pytest.param(example_rule(conditions={"all": [{"any": [LEAF] * 4}] * 16}), "conditions", id="too many nodes"),
    pytest.param(conditions(*[{"fact": "product.brand", "op": "in", "value": ["b" * 190] * 50}] * 4),
                 "conditions", id="too many bytes"),
    # the action
    pytest.param(example_rule(action={"recipe": "teleport"}), "action.recipe", id="unknown recipe"),
    pytest.param(params("spots_near_destination", radius_m=6000), "action.params.radius_m", id="radius > 5000"),
    pytest.param(params("spots_near_destination", limit=21), "action.params.limit", id="limit > 20"),
    pytest.param(params("service_due", within_dayz=3), "action.params.within_dayz", id="unknown parameter"),
    pytest.param(example_rule(action={"recipe": "message"}), "action.params", id="message without params"),
    pytest.param(params("message", title="Hi {user.nmae}", body="b"), "action.params.title",
                 id="unknown placeholder"),
    pytest.param(params("message", title="t", body="ETA {event.dwell_s}"), "action.params.body",
                 id="placeholder of another trigger"),
    pytest.param(params("message", title="t", body="a } b"), "action.params.body", id="stray brace"),
]


@pytest.mark.parametrize(("body", "field"), REFUSED)
def test_each_refusal_is_a_422_naming_the_field_and_nothing_is_written(db_client, db_app, operator, body, field):
    before = version(db_app)

    error = problem(db_client.post("/v1/rules", json=body, headers=operator), 422, field)

    assert field in error["detail"]
    assert count(db_app, Rule) == 0
    assert version(db_app) == before


def test_every_problem_of_a_rule_is_reported_at_once(db_client, operator):
    body = example_rule(trigger={"event": "trip.approaching", "within_m": 1},
                        conditions={"all": [{"fact": "x.y", "op": "exists"}, {"fact": "user.weekday", "op": "in"}]},
                        action={"recipe": "spots_near_destination", "params": {"limit": 0}})

    error = problem(db_client.post("/v1/rules", json=body, headers=operator), 422)

    assert set(error["errors"]) == {"trigger.within_m", "conditions.all.0.fact", "conditions.all.1.value",
                                    "action.params.limit"}


@pytest.mark.parametrize("raw", [
    '{"name": "n", "trigger": {"event": "trip.approaching", "within_m": NaN}, "action": {"recipe": "message"}}',
    '{"name": "n", "trigger": {"event": "trip.started"}, "action": {"recipe": "service_due"},'
    ' "conditions": {"fact": "trip.eta_s", "op": "<", "value": Infinity}}',
    '{"name": "n", "trigger": {"event": "trip.started"}, "action": {"recipe": "service_due"},'
    ' "conditions": {"fact": "trip.eta_s", "op": "<", "value": 1e400}}',
])
def test_numbers_json_cannot_carry_are_refused_not_stored(db_client, db_app, operator, raw):
    response = db_client.post("/v1/rules", data=raw, content_type="application/json", headers=operator)

    problem(response, 422)
    assert count(db_app, Rule) == 0


# --------------------------------------------------------------------------- change


def test_a_change_replaces_only_the_fields_sent(db_client, operator):
    rule = create(db_client, operator, SMALL_SPOTS)

    response = db_client.patch(f"/v1/rules/{rule['id']}", json={"priority": 50, "enabled": False}, headers=operator)

    assert response.status_code == 200, response.get_json()
    changed = response.get_json()
    assert (changed["priority"], changed["enabled"]) == (50, False)
    assert {k: changed[k] for k in ("name", "trigger", "conditions", "action")} == {
        k: rule[k] for k in ("name", "trigger", "conditions", "action")}
    assert changed["updated_at"] > rule["updated_at"] and changed["created_at"] == rule["created_at"]
    assert db_client.get(f"/v1/rules/{rule['id']}", headers=operator).get_json() == changed


def test_a_changed_part_is_replaced_whole_and_gets_its_defaults(db_client, operator):
    rule = create(db_client, operator, SMALL_SPOTS)

    changed = db_client.patch(f"/v1/rules/{rule['id']}", headers=operator, json={
        "action": {"recipe": "spots_near_destination", "params": {"limit": 3}},
        "conditions": {"not": {"fact": "product.attributes.length_m", "op": ">", "value": 3.2}},
    }).get_json()

    assert changed["action"]["params"] == {"radius_m": 400, "limit": 3, "duration_min": 60}
    assert changed["conditions"] == {"not": {"fact": "product.attributes.length_m", "op": ">", "value": 3.2}}


def test_a_change_is_judged_with_the_stored_rule(db_client, db_app, operator):
    rule = create(db_client, operator, example_rule(
        conditions={"all": [{"fact": "event.eta_s", "op": "<", "value": 600}]},
        action={"recipe": "message", "params": {"title": "Nearly there", "body": "{event.distance_m} m to go"}}))
    before = version(db_app)

    # A new trigger without the event facts the stored conditions and template use.
    error = problem(db_client.patch(f"/v1/rules/{rule['id']}", json={"trigger": {"event": "telemetry.updated"}},
                                    headers=operator), 422)

    assert set(error["errors"]) == {"conditions.all.0.fact", "action.params.body"}
    assert db_client.get(f"/v1/rules/{rule['id']}", headers=operator).get_json() == rule
    assert version(db_app) == before

    # Sent together with conditions and an action that fit it, the same trigger is accepted.
    response = db_client.patch(f"/v1/rules/{rule['id']}", headers=operator, json={
        "trigger": {"event": "trip.started"}, "conditions": {"all": [{"fact": "event.distance_m", "op": ">",
                                                                      "value": 10000}]},
        "action": {"recipe": "message", "params": {"title": "Long trip", "body": "{event.distance_m} m to go"}}})
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize(("changes", "field"), [
    ({}, "body"),
    ({"name": ""}, "name"),
    ({"priority": "high"}, "priority"),
    ({"trigger": None}, "trigger"),
    ({"id": str(uuid.uuid4())}, "id"),
    ({"created_by": "me"}, "created_by"),
    ({"conditions": {"all": [{"fact": "product.attributes.length", "op": "<", "value": 3}]}},
     "conditions.all.0.fact"),
    ({"action": {"recipe": "spots_near_destination", "params": {"radius_m": 0}}}, "action.params.radius_m"),
    ({"trigger": {"event": "trip.approaching"}}, "trigger"),
])
def test_a_refused_change_names_the_field_and_changes_nothing(db_client, operator, changes, field):
    rule = create(db_client, operator, SMALL_SPOTS)

    problem(db_client.patch(f"/v1/rules/{rule['id']}", json=changes, headers=operator), 422, field)

    assert db_client.get(f"/v1/rules/{rule['id']}", headers=operator).get_json() == rule


# --------------------------------------------------------------------------- unknown ids, delete


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_an_unknown_rule_is_404(db_client, operator, method):
    kwargs = {"json": {"priority": 1}} if method == "patch" else {}

    problem(getattr(db_client, method)(f"/v1/rules/{uuid.uuid4()}", headers=operator, **kwargs), 404)


def test_a_deleted_rule_is_gone_with_its_scores(db_client, db_app, operator):
    rule = create(db_client, operator, SMALL_SPOTS)
    user = make_user(db_client, api_key(db_app, "app"), "alice")
    database = db_app.extensions["smartsvc"].database
    with database.unit_of_work() as uow:
        assert uow.session is not None
        uow.session.add(UserRuleScore(user_id=uuid.UUID(user.id), rule_id=uuid.UUID(rule["id"]), score=0.5,
                                      dismissals=2))
        uow.commit()

    assert db_client.delete(f"/v1/rules/{rule['id']}", headers=operator).status_code == 204

    problem(db_client.get(f"/v1/rules/{rule['id']}", headers=operator), 404)
    problem(db_client.delete(f"/v1/rules/{rule['id']}", headers=operator), 404)
    assert count(db_app, UserRuleScore) == 0


def test_a_score_has_defaults_and_goes_with_its_user(db_client, db_app, operator):
    rule = create(db_client, operator, SMALL_SPOTS)
    user = make_user(db_client, api_key(db_app, "app"), "alice")
    database = db_app.extensions["smartsvc"].database
    with database.unit_of_work() as uow:
        assert uow.session is not None
        uow.session.add(UserRuleScore(user_id=uuid.UUID(user.id), rule_id=uuid.UUID(rule["id"])))
        uow.commit()
    with database.session() as session:
        score = session.scalar(select(UserRuleScore))
        assert (score.score, score.dismissals, score.muted_at) == (1.0, 0, None)

    with database.unit_of_work() as uow:
        assert uow.session is not None
        uow.session.execute(delete(User).where(User.id == uuid.UUID(user.id)))
        uow.commit()

    assert count(db_app, UserRuleScore) == 0
    assert count(db_app, Rule) == 1


# --------------------------------------------------------------------------- list


def test_rules_page_with_cursors_in_creation_order(db_client, operator):
    ids = [create(db_client, operator, example_rule(name=f"rule {n}"))["id"] for n in range(3)]

    first = db_client.get("/v1/rules?limit=2", headers=operator).get_json()
    rest = db_client.get("/v1/rules", query_string={"limit": 2, "cursor": first["next_cursor"]},
                         headers=operator).get_json()

    assert [r["id"] for r in first["items"] + rest["items"]] == ids
    assert first["next_cursor"] and rest["next_cursor"] is None


def test_rules_are_filtered_by_enabled_and_trigger_event(db_client, operator):
    approaching = create(db_client, operator, SMALL_SPOTS)["id"]
    disabled = create(db_client, operator, example_rule(enabled=False))["id"]
    scheduled = create(db_client, operator, example_rule(trigger={"event": "schedule", "at": "08:00"}))["id"]

    def ids(**query: Any) -> list[str]:
        response = db_client.get("/v1/rules", query_string=query, headers=operator)
        assert response.status_code == 200, response.get_json()
        return [r["id"] for r in response.get_json()["items"]]

    assert ids(enabled="true") == [approaching, scheduled]
    assert ids(enabled="false") == [disabled]
    assert ids(event="trip.approaching") == [approaching, disabled]
    assert ids(event="schedule", enabled="true") == [scheduled]
    assert ids(event="geofence.entered") == []


@pytest.mark.parametrize(("query", "field"), [
    ({"event": "trip.approached"}, "event"),
    ({"enabled": "yes"}, "enabled"),
    ({"limit": 0}, "limit"),
    ({"cursor": "nope"}, "cursor"),
])
def test_bad_list_filters_are_named(db_client, operator, query, field):
    problem(db_client.get("/v1/rules", query_string=query, headers=operator), 422, field)


# --------------------------------------------------------------------------- count limit, version, cache


def test_past_the_rule_limit_a_create_is_refused(db_settings, tmp_path):
    app = make_app(db_settings.replace(max_rules=2))
    try:
        client, headers = app.test_client(), bearer(api_key(app, "operator"))
        for n in range(2):
            create(client, headers, example_rule(name=f"r{n}"))

        error = problem(client.post("/v1/rules", json=SMALL_SPOTS, headers=headers), 409, "rules")

        assert "SMARTSVC_MAX_RULES" in error["detail"]
        assert count(app, Rule) == 2
    finally:
        close_app(app)


def test_every_write_bumps_the_version_once(db_client, db_app, operator):
    start = version(db_app)
    rule = create(db_client, operator, SMALL_SPOTS)
    assert version(db_app) == start + 1

    db_client.patch(f"/v1/rules/{rule['id']}", json={"priority": 3}, headers=operator)
    assert version(db_app) == start + 2

    db_client.delete(f"/v1/rules/{rule['id']}", headers=operator)
    assert version(db_app) == start + 3

    problem(db_client.delete(f"/v1/rules/{rule['id']}", headers=operator), 404)
    assert version(db_app) == start + 3


def test_the_version_row_is_recreated_when_it_is_gone(db_client, db_app, operator):
    database = db_app.extensions["smartsvc"].database
    with database.unit_of_work() as uow:
        assert uow.session is not None
        uow.session.execute(delete(RuleVersion))
        uow.commit()

    create(db_client, operator, SMALL_SPOTS)

    assert version(db_app) == 1


def test_the_cached_rule_set_follows_every_change(db_client, db_app, operator):
    database = db_app.extensions["smartsvc"].database
    cache = RuleCache()
    low = create(db_client, operator, example_rule(name="low", priority=1))
    high = create(db_client, operator, example_rule(name="high", priority=9))
    create(db_client, operator, example_rule(name="off", priority=99, enabled=False))
    create(db_client, operator, example_rule(name="daily", trigger={"event": "schedule", "at": "09:00"}))

    with database.session() as session:
        first = cache.current(session)
        assert [r.name for r in first.rules_for("trip.approaching")] == ["high", "low"]
        assert [r.name for r in first.rules_for("schedule")] == ["daily"]
        assert first.rules_for("trip.arrived") == ()
        assert cache.current(session) is first  # nothing changed: no reload
        assert first.rules_for("trip.approaching")[0].action["params"]["limit"] == 5

    db_client.patch(f"/v1/rules/{low['id']}", json={"priority": 20}, headers=operator)
    db_client.delete(f"/v1/rules/{high['id']}", headers=operator)

    with database.session() as session:
        second = cache.current(session)
    assert second is not first and second.version == first.version + 2
    assert [(r.name, r.priority) for r in second.rules_for("trip.approaching")] == [("low", 20)]
    assert [r.name for r in first.rules_for("trip.approaching")] == ["high", "low"]  # a held set never changes


def test_the_app_container_holds_one_rule_cache(db_app):
    assert isinstance(db_app.extensions["smartsvc"].rule_cache, RuleCache)


def test_equal_priorities_keep_creation_order(db_client, db_app, operator):
    names = [create(db_client, operator, example_rule(name=f"r{n}"))["name"] for n in range(4)]

    with db_app.extensions["smartsvc"].database.session() as session:
        rules = RuleCache().current(session).rules_for("trip.approaching")

    assert [r.name for r in rules] == names


def test_stored_json_is_read_back_unchanged(db_client, operator):
    rule = example_rule(conditions={"all": [{"fact": "geofence.metadata.floor", "op": "in",
                                             "value": ["B1", 2, 2.5, True, "ünïcødé ✓"]}]})

    body = create(db_client, operator, rule)

    assert json.dumps(body["conditions"], sort_keys=True) == json.dumps(rule["conditions"], sort_keys=True)
