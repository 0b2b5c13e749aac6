"""The condition tree: checked when a rule is saved, evaluated on a context."""

from __future__ import annotations

import pytest

from smartsvc.rules.conditions import check_conditions, evaluate
from smartsvc.rules.limits import MAX_CHILDREN, MAX_DEPTH, MAX_NODES

LEAF = {"fact": "product.attributes.length_m", "op": "<=", "value": 3.0}
FORTWO = {"product": {"attributes": {"length_m": 2.69, "powertrain": "bev", "connectors": ["type2", "ccs"]},
                      "telemetry": {"battery_pct": 18}},
          "user": {"local_time": "17:40", "weekday": 5}}


def leaf(fact: str, op: str, value=None) -> dict:
    node = {"fact": fact, "op": op}
    if op != "exists":
        node["value"] = value
    return node


# --------------------------------------------------------------------------- checking


@pytest.mark.parametrize("tree", [
    {"all": []},
    LEAF,
    {"all": [LEAF]},
    {"any": [LEAF, leaf("user.weekday", "in", [6, 7])]},
    {"not": LEAF},
    {"all": [{"any": [{"not": LEAF}]}]},
    {"all": [LEAF] * MAX_CHILDREN},
    {"all": [leaf("geofence.metadata.operator", "==", "Q-Park"), leaf("geofence.tag", "exists")]},
])
def test_valid_trees_have_no_problems(tree):
    assert check_conditions(tree, "trip.approaching") == []


@pytest.mark.parametrize(("tree", "path", "message"), [
    ([LEAF], "conditions", "must be an object"),
    ({"all": [LEAF, "x"]}, "conditions.all.1", "must be an object"),
    ({}, "conditions.fact", "is required"),
    ({"all": LEAF}, "conditions.all", "must be a list of conditions"),
    ({"any": []}, "conditions.any", "must list at least one condition"),
    ({"all": [LEAF], "any": [LEAF]}, "conditions", "has all and any: a node is exactly one of all, any, not"),
    ({"all": [LEAF], "note": "x"}, "conditions.note", "unknown field: a node with 'all' has nothing else"),
    ({"not": [LEAF]}, "conditions.not", "must be an object"),
    ({"all": [{"fact": "product.atributes.length_m", "op": "<", "value": 3}]}, "conditions.all.0.fact",
     "unknown fact 'product.atributes.length_m'; did you mean 'product.attributes.length_m'?"),
    ({"all": [{"fact": "weather.rain", "op": "exists"}]}, "conditions.all.0.fact", "unknown fact 'weather.rain'"),
    ({"all": [{"fact": 3, "op": "exists"}]}, "conditions.all.0.fact", "must be a fact name"),
    ({"all": [{"fact": "geofence.metadata.", "op": "exists"}]}, "conditions.all.0.fact",
     "'geofence.metadata.' is not a metadata fact"),
    ({"all": [{"fact": "geofence.metadata.a b", "op": "exists"}]}, "conditions.all.0.fact",
     "'geofence.metadata.a b' is not a metadata fact"),
    ({"all": [{"fact": "user.weekday", "op": "=~", "value": 1}]}, "conditions.all.0.op",
     "unknown op '=~'; use one of ==, !=, <, <=, >, >=, in, contains, exists"),
    ({"all": [{"fact": "user.weekday", "value": 1}]}, "conditions.all.0.op", "is required"),
    ({"all": [{"fact": "product.brand", "op": "<", "value": "m"}]}, "conditions.all.0.op",
     "'<' does not apply to product.brand, which is text; use one of ==, !=, in, contains, exists"),
    ({"all": [{"fact": "user.weekday", "op": "=="}]}, "conditions.all.0.value", "is required"),
    ({"all": [{"fact": "user.weekday", "op": "exists", "value": True}]}, "conditions.all.0.value",
     "'exists' takes no value"),
    ({"all": [{"fact": "user.weekday", "op": "in", "value": [1, 9]}]}, "conditions.all.0.value.1",
     "must be an integer from 1 to 7"),
    ({"all": [{"fact": "user.weekday", "op": "exists", "negate": True}]}, "conditions.all.0.negate",
     "unknown field"),
    ({"all": [{"fact": "event.dwell_s", "op": ">", "value": 600}]}, "conditions.all.0.fact",
     "'event.dwell_s' is not a field of trigger 'trip.approaching' (its event facts: event.distance_m, event.eta_s)"),
])
def test_each_problem_is_named_by_its_path(tree, path, message):
    problems = check_conditions(tree, "trip.approaching")

    assert any(p == path and m.startswith(message) for p, m in problems), problems


def test_every_problem_of_a_tree_is_listed():
    tree = {"all": [{"fact": "x.y", "op": "<", "value": 1}, {"fact": "user.weekday", "op": "<", "value": "Mon"},
                    {"any": []}]}

    assert [path for path, _ in check_conditions(tree, None)] == [
        "conditions.all.0.fact", "conditions.all.1.value", "conditions.all.2.any"]


def _chain(depth: int) -> dict:
    """A tree whose longest path has ``depth`` nodes (``not`` … ``not`` leaf)."""
    tree: dict = LEAF
    for _ in range(depth - 1):
        tree = {"not": tree}
    return tree


def test_trees_as_deep_as_the_limit_are_accepted():
    assert check_conditions(_chain(MAX_DEPTH), None) == []
    assert check_conditions({"all": [{"any": [{"not": LEAF}]}]}, None) == []


def test_a_tree_one_level_too_deep_is_refused_where_it_goes_too_deep():
    problems = check_conditions({"all": [{"any": [{"all": [{"not": LEAF}]}]}]}, None)

    assert problems == [("conditions.all.0.any.0.all.0", f"nests deeper than {MAX_DEPTH} levels "
                                                  "(each all, any, not and condition is one)")]


def test_an_absurdly_deep_tree_is_refused_without_walking_all_of_it():
    problems = check_conditions(_chain(10_000), None)

    assert len(problems) == 1 and "nests deeper" in problems[0][1]


def test_too_many_children_are_refused():
    problems = check_conditions({"all": [LEAF] * (MAX_CHILDREN + 1)}, None)

    assert problems == [("conditions.all", f"lists {MAX_CHILDREN + 1} conditions; at most {MAX_CHILDREN}")]


def test_too_many_nodes_are_refused():
    wide = {"all": [{"any": [LEAF] * 4}] * MAX_CHILDREN}  # 1 + 16 × 5 = 81 nodes

    problems = check_conditions(wide, None)

    assert problems == [("conditions", f"has 81 nodes; at most {MAX_NODES} (conditions and all/any/not)")]


def test_the_node_limit_itself_is_accepted():
    tree = {"all": [{"any": [LEAF] * 3}] * 15 + [{"any": [LEAF, LEAF]}]}  # 1 + 15 × 4 + 3 = 64

    assert check_conditions(tree, None) == []


def test_event_facts_are_those_of_the_trigger():
    dwell = {"fact": "event.dwell_s", "op": ">=", "value": 600}

    assert check_conditions(dwell, "geofence.dwelled") == []
    assert check_conditions(dwell, "geofence.entered")[0][0] == "conditions.fact"
    # An invalid trigger (None) is reported once, on the trigger, not on every event fact.
    assert check_conditions(dwell, None) == []


# --------------------------------------------------------------------------- evaluating


def test_a_leaf_that_holds_returns_its_fact():
    assert evaluate(LEAF, FORTWO) == (True, {"product.attributes.length_m": 2.69})


def test_a_leaf_that_does_not_hold_returns_no_facts():
    assert evaluate({"fact": "product.attributes.length_m", "op": "<", "value": 2.5}, FORTWO) == (False, {})


def test_flat_and_nested_facts_are_both_found():
    flat = {"product.attributes.length_m": 2.69}

    assert evaluate(LEAF, flat) == (True, {"product.attributes.length_m": 2.69})
    assert evaluate(LEAF, {"product": {"attributes": {"length_m": 4.5}}, **flat})[0] is True  # the flat name wins


def test_metadata_facts_walk_nested_objects():
    facts = {"geofence": {"metadata": {"operator": {"name": "Q-Park"}}}}

    assert evaluate({"fact": "geofence.metadata.operator.name", "op": "==", "value": "Q-Park"}, facts)[0]


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">=", "in", "contains", "exists"])
def test_a_missing_fact_makes_the_leaf_false_whatever_the_operator(op):
    value = {"in": [1], "contains": "a", "exists": None}.get(op, 1)
    tree = leaf("geofence.metadata.levels", op, value)

    assert evaluate(tree, FORTWO) == (False, {})


def test_json_null_counts_as_missing():
    assert evaluate(leaf("trip.eta_s", "exists"), {"trip": {"eta_s": None}}) == (False, {})


def test_not_exists_asks_for_a_missing_fact_and_reports_it_missing():
    assert evaluate({"not": leaf("trip.eta_s", "exists")}, FORTWO) == (True, {"trip.eta_s": None})
    assert evaluate({"not": leaf("user.weekday", "exists")}, FORTWO) == (False, {})


def test_all_holds_when_every_child_holds_and_returns_all_their_facts():
    tree = {"all": [LEAF, leaf("product.telemetry.battery_pct", "<", 20),
                    leaf("product.attributes.connectors", "contains", "ccs")]}

    assert evaluate(tree, FORTWO) == (True, {"product.attributes.length_m": 2.69,
                                             "product.telemetry.battery_pct": 18,
                                             "product.attributes.connectors": ["type2", "ccs"]})
    assert evaluate({"all": [LEAF, leaf("product.telemetry.battery_pct", "<", 10)]}, FORTWO) == (False, {})


def test_an_empty_all_always_holds():
    assert evaluate({"all": []}, {}) == (True, {})


def test_any_returns_the_facts_of_the_children_that_hold():
    tree = {"any": [leaf("user.weekday", "in", [6, 7]), leaf("user.local_time", ">=", "17:00"), LEAF]}

    assert evaluate(tree, FORTWO) == (True, {"user.local_time": "17:40", "product.attributes.length_m": 2.69})
    assert evaluate({"any": [leaf("user.weekday", "in", [6, 7])]}, FORTWO) == (False, {})


def test_not_returns_the_facts_that_made_its_child_false():
    tree = {"not": {"all": [LEAF, leaf("product.attributes.powertrain", "==", "ice")]}}

    assert evaluate(tree, FORTWO) == (True, {"product.attributes.powertrain": "bev"})


def test_a_value_of_an_unexpected_type_in_the_context_makes_the_leaf_false_without_raising():
    odd = {"product": {"attributes": {"length_m": "2.69 m", "connectors": "ccs"}}}

    assert evaluate(LEAF, odd) == (False, {})
    assert evaluate(leaf("product.attributes.connectors", "contains", "ccs"), odd)[0] is True  # text contains text
    assert evaluate(leaf("product.attributes.length_m", "in", [2.69]), odd) == (False, {})


def test_integers_past_a_floats_range_are_refused_or_compared_without_raising():
    huge = 10 ** 400

    assert check_conditions(leaf("trip.eta_s", "<", huge), None) == [
        ("conditions.value", "must be a number from -1e+12 to 1e+12")]
    assert evaluate(leaf("trip.eta_s", "<", 600), {"trip.eta_s": huge}) == (False, {})
    assert evaluate(leaf("trip.eta_s", ">", 600), {"trip.eta_s": huge}) == (True, {"trip.eta_s": huge})


def test_messages_quote_input_briefly():
    problems = check_conditions({"fact": "user.weekday", "op": list(range(10_000))}, None)

    assert problems == [("conditions.op", "unknown op an array; use one of ==, !=, <, <=, >, >=, in, contains, "
                                          "exists")]
    long_fact = "user." + "x" * 1000
    assert len(check_conditions({"fact": long_fact, "op": "exists"}, None)[0][1]) < 300
