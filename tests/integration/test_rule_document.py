"""The OpenAPI document says exactly which rules the API accepts.

The rule components are generated from the same catalogue the validator
uses; here the served document (checked with a JSON Schema validator) and
:func:`smartsvc.rules.validate_rule` must give the same verdict on hand-picked
and generated rules. The two rules JSON Schema cannot express are the
documented exceptions: the budgets of a whole rule (tree nodes, bytes of
JSON), and ``event.*`` facts of another trigger.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartsvc.http.rule_schemas import ACTION_COMPONENTS, LEAF, TRIGGER_COMPONENTS, fact_groups
from smartsvc.rules import validate_rule
from smartsvc.rules.facts import EVENT_FACTS, FACTS, METADATA_FACT, all_event_facts
from smartsvc.rules.ops import OPS, operand_for, ops_for
from smartsvc.rules.recipes import RECIPES
from smartsvc.rules.triggers import TRIGGERS
from tests.support.rules import SMALL_SPOTS, example_rule


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict[str, Any]:
    from tests.support.factories import make_app, make_settings

    app = make_app(make_settings(tmp_path_factory.mktemp("doc") / "var"))
    try:
        return app.test_client().get("/v1/openapi.json").get_json()
    finally:
        app.extensions["smartsvc"].database.engine.dispose()


@pytest.fixture(scope="module")
def accepts(document):
    """Whether the document's rule create body admits a value."""
    root = {"$ref": "#/components/schemas/RuleCreate", "components": document["components"]}
    validator = jsonschema_rs.Draft4Validator(root)
    return validator.is_valid


def agree(accepts, body: Any) -> None:
    problems = validate_rule(body)
    assert accepts(body) == (not problems), (body, problems)


def test_every_fact_and_operator_pair_is_in_exactly_one_leaf_branch():
    pairs: list[tuple[str, str]] = []
    for fact_schema, ops, _value in fact_groups():
        names = fact_schema.get("enum", ["geofence.metadata.*"])
        pairs.extend((name, op) for name in names for op in ops)
    expected = [(name, op) for name, fact in {**FACTS, **all_event_facts()}.items() for op in ops_for(fact)]
    expected += [("geofence.metadata.*", op) for op in ops_for(METADATA_FACT)]

    assert sorted(pairs) == sorted(expected)


def test_every_trigger_and_recipe_has_its_component(document):
    schemas = document["components"]["schemas"]
    events = [event for events in TRIGGER_COMPONENTS.values() for event in events]

    assert sorted(events) == sorted(TRIGGERS)
    assert set(ACTION_COMPONENTS) == set(RECIPES)
    assert {LEAF, *TRIGGER_COMPONENTS, *ACTION_COMPONENTS.values(), "RuleCondition"} <= set(schemas)


LEAF_ = {"fact": "product.attributes.length_m", "op": "<=", "value": 3.0}
HAND_PICKED = [
    SMALL_SPOTS,
    example_rule(conditions={"all": []}),
    example_rule(conditions={"any": [LEAF_, {"not": {"fact": "trip.eta_s", "op": "exists"}}]}),
    example_rule(conditions={"all": [{"any": [{"not": LEAF_}]}]}),
    example_rule(conditions={"all": [{"any": [{"all": [{"not": LEAF_}]}]}]}),  # one level too deep
    example_rule(conditions={"all": [LEAF_] * 17}),
    example_rule(conditions={"any": []}),
    example_rule(conditions={"all": [{"fact": "user.weekday", "op": "in", "value": [6, 7]}]}),
    example_rule(conditions={"all": [{"fact": "user.weekday", "op": "in", "value": [6, 8]}]}),
    example_rule(conditions={"all": [{"fact": "user.weekday", "op": "==", "value": 6.0}]}),
    example_rule(conditions={"all": [{"fact": "user.local_time", "op": "<", "value": "24:00"}]}),
    example_rule(conditions={"all": [{"fact": "geofence.metadata.a.b.c.d", "op": "==", "value": False}]}),
    example_rule(conditions={"all": [{"fact": "geofence.metadata.a.b.c.d.e", "op": "exists"}]}),
    example_rule(conditions={"all": [{"fact": "geofence.metadata." + "k" * 41, "op": "exists"}]}),
    example_rule(conditions={"all": [{"fact": "product.brand", "op": "contains", "value": ""}]}),
    example_rule(conditions={"all": [{"fact": "product.brand", "op": "==", "value": ""}]}),
    example_rule(conditions={"all": [{"fact": "user.weekday", "op": "exists", "value": 1}]}),
    example_rule(trigger={"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "<",
                          "value": 100}),
    example_rule(trigger={"event": "telemetry.threshold", "fact": "product.telemetry.battery_pct", "op": "<",
                          "value": 101}),
    example_rule(trigger={"event": "telemetry.threshold", "fact": "product.telemetry.odometer_km", "op": ">",
                          "value": 101}),
    example_rule(trigger={"event": "trip.approaching"}),
    example_rule(trigger={"event": "trip.approaching", "within_s": 30.0}),
    example_rule(trigger={"event": "schedule", "at": "07:30", "weekdays": [7, 1]}),
    example_rule(trigger={"event": "schedule", "at": "07:30", "weekdays": [7, 7]}),
    example_rule(trigger={"event": "geofence.exited", "tag": " "}),
    example_rule(action={"recipe": "message", "params": {"title": " {user.local_time}", "body": "ok"}}),
    example_rule(action={"recipe": "message", "params": {"title": "{trip.destination}", "body": "ok"}}),
    example_rule(action={"recipe": "message", "params": {"title": "a {b", "body": "ok"}}),
    example_rule(action={"recipe": "message", "params": {"title": "\u3000", "body": "ok"}}),
    example_rule(action={"recipe": "message", "params": {"title": "t", "body": "{geofence.metadata.price}"}}),
    example_rule(action={"recipe": "service_due", "params": {}}),
    example_rule(action={"recipe": "service_due", "params": {"within_km": 50_001}}),
    example_rule(name="\t"),
    example_rule(priority=-1000, cooldown_s=0, enabled=False),
    {**SMALL_SPOTS, "extra": 1},
]


@pytest.mark.parametrize("body", HAND_PICKED)
def test_the_document_and_the_validator_agree(accepts, body):
    agree(accepts, body)


def test_the_documented_exceptions(accepts):
    too_many_nodes = example_rule(conditions={"all": [{"any": [LEAF_] * 4}] * 16})
    too_many_bytes = example_rule(conditions={"all": [{"fact": "product.brand", "op": "in",
                                                       "value": ["b" * 190] * 50}] * 4})
    other_trigger = example_rule(conditions={"fact": "event.dwell_s", "op": ">", "value": 1})

    for body in (too_many_nodes, too_many_bytes, other_trigger):
        assert accepts(body) and validate_rule(body)


# --------------------------------------------------------------------------- generated


_OWN_EVENT_FACTS = list(EVENT_FACTS["trip.approaching"])
_FACT_NAMES = [*FACTS, *_OWN_EVENT_FACTS, "geofence.metadata.level", "geofence.metadata.x y", "product.colour",
               "event.nope", ""]
_VALUES = st.one_of(
    st.sampled_from([0, 1, 7, 8, -3, 2.5, 1e12, 1e13, "", "bev", "ccs", "09:00", "24:00", "9:00", "car", "x" * 201,
                     True, False, None, {}, ["bev"], [6, 7], ["09:00"], [], [1, "a"], ["ccs", "type2"]]),
    st.lists(st.sampled_from([1, 2.5, "bev", "09:00", True]), max_size=3),
)


@st.composite
def leaves(draw) -> dict[str, Any]:
    leaf: dict[str, Any] = {"fact": draw(st.sampled_from(_FACT_NAMES)), "op": draw(st.sampled_from([*OPS, "=~"]))}
    if draw(st.booleans()):
        leaf["value"] = draw(_VALUES)
    return leaf


TREES = st.recursive(
    leaves(),
    lambda children: st.one_of(
        st.builds(lambda items: {"all": items}, st.lists(children, max_size=3)),
        st.builds(lambda items: {"any": items}, st.lists(children, max_size=3)),
        st.builds(lambda child: {"not": child}, children),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=TREES)
def test_generated_trees_get_the_same_verdict(accepts, tree):
    agree(accepts, example_rule(conditions=tree))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(fact=st.sampled_from([*FACTS, "geofence.metadata.k"]), op=st.sampled_from(OPS), value=_VALUES)
def test_every_fact_operator_and_operand_gets_the_same_verdict(accepts, fact, op, value):
    leaf = {"fact": fact, "op": op, "value": value}
    fact_spec = FACTS.get(fact, METADATA_FACT)
    if op in ops_for(fact_spec) and operand_for(fact_spec, fact, op) is None:
        del leaf["value"]
    agree(accepts, example_rule(conditions=leaf))
