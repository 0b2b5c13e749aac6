"""Operators: what each computes on a context's value, and which operands each takes when a rule is saved."""

from __future__ import annotations

import pytest

from smartsvc.rules.facts import FACTS, METADATA_FACT
from smartsvc.rules.ops import NotApplicable, apply, check_operand, operand_for, ops_for


@pytest.mark.parametrize(("op", "actual", "operand", "expected"), [
    ("==", 2.69, 2.69, True),
    ("==", 3, 3.0, True),
    ("==", 2.69, 3.0, False),
    ("==", "bev", "bev", True),
    ("==", True, 1, False),  # a boolean is never a number
    ("==", 1, True, False),
    ("==", "3", 3, False),  # nor is text
    ("!=", 2.69, 3.0, True),
    ("!=", 3.0, 3, False),
    ("!=", "3", 3, True),
    ("<", 2.69, 3.0, True),
    ("<", 3.0, 3.0, False),
    ("<=", 3.0, 3.0, True),
    ("<=", 3.1, 3.0, False),
    (">", 21, 20, True),
    (">", 20, 20, False),
    (">=", 20, 20, True),
    (">=", 19.99, 20, False),
    ("<", "08:59", "09:00", True),
    ("<", "09:00", "09:00", False),
    ("<=", "09:00", "09:00", True),
    (">", "22:15", "22:00", True),
    (">=", "07:00", "07:00", True),
    ("<", "09:00:30", "09:01", True),  # a fact's time may carry seconds
    (">", "09:00:30", "09:00", True),
    ("<", "9:00", "10:00", False),  # not HH:MM: no order
    ("<", "2.5", 3, False),  # text is not a number
    ("<", True, 3, False),
    ("<", 2, "09:00", False),  # a number is not a time
    ("<", float("nan"), 3, False),
    ("in", "bev", ["bev", "phev"], True),
    ("in", "ice", ["bev", "phev"], False),
    ("in", 3, [1, 2, 3.0], True),
    ("in", True, [1, 2], False),
    ("in", 1, [True], False),
    ("in", "09:00", ["09:00", "18:00"], True),
    ("contains", ["type2", "ccs"], "ccs", True),
    ("contains", ["type2", "ccs"], "chademo", False),
    ("contains", [1.5, 2.0], 2, True),
    ("contains", [1, 2], True, False),
    ("contains", "Hauptbahnhof Nord", "bahnhof", True),
    ("contains", "Hauptbahnhof", "Nord", False),
    ("contains", 12, "1", False),
    ("exists", 0, None, True),
    ("exists", "", None, True),
    ("exists", False, None, True),
    ("exists", [], None, True),
])
def test_every_operator_computes_what_it_says(op, actual, operand, expected):
    assert apply(op, actual, operand) is expected


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">=", "in", "contains", "exists"])
def test_a_missing_fact_satisfies_no_operator(op):
    operand = {"in": [1, 2], "exists": None}.get(op, 1)

    assert apply(op, None, operand) is False


def _problems(fact_name, op, value):
    fact = FACTS.get(fact_name, METADATA_FACT)
    operand = operand_for(fact, fact_name, op)
    return check_operand(operand, value)


@pytest.mark.parametrize(("fact", "op", "value"), [
    ("product.attributes.length_m", "<=", 3.0),
    ("product.attributes.length_m", "==", 3),
    ("product.attributes.length_m", "in", [2.69, 3.0]),
    ("product.telemetry.battery_pct", "<", 20),
    ("user.weekday", "in", [6, 7]),
    ("user.weekday", ">=", 1),
    ("user.local_time", ">=", "07:00"),
    ("user.local_time", "in", ["07:00", "23:59"]),
    ("product.attributes.powertrain", "==", "bev"),
    ("product.attributes.powertrain", "in", ["bev", "phev"]),
    ("product.kind", "!=", "van"),
    ("product.brand", "==", ""),
    ("product.brand", "contains", "sma"),
    ("product.attributes.connectors", "contains", "ccs"),
    ("geofence.metadata.operator", "==", "Q-Park"),
    ("geofence.metadata.levels", ">", 2),
    ("geofence.metadata.opens", "<", "08:00"),
    ("geofence.metadata.ev", "==", True),
    ("geofence.metadata.tags", "contains", "covered"),
    ("geofence.metadata.floor", "in", ["B1", 2, False]),
])
def test_operands_of_the_right_type_are_accepted(fact, op, value):
    assert _problems(fact, op, value) == []


@pytest.mark.parametrize(("fact", "op", "value", "message"), [
    ("product.attributes.length_m", "<=", "3.0", "must be a number"),
    ("product.attributes.length_m", "<", True, "must be a number"),
    ("product.attributes.length_m", "==", None, "must be a number"),
    ("product.attributes.length_m", "<", 1e13, "must be a number from -1e+12 to 1e+12"),
    ("product.attributes.length_m", "in", 3.0, "must be a list of 1–50 values"),
    ("product.attributes.length_m", "in", [], "must be a list of 1–50 values"),
    ("product.attributes.length_m", "in", list(range(51)), "must be a list of 1–50 values"),
    ("user.weekday", "==", 8, "must be an integer from 1 to 7"),
    ("user.weekday", "==", 6.0, "must be an integer from 1 to 7"),
    ("user.local_time", "<", "7:00", "must be a local time HH:MM"),
    ("user.local_time", "<", "24:00", "must be a local time HH:MM"),
    ("user.local_time", "<", 700, "must be a local time HH:MM"),
    ("product.attributes.powertrain", "==", "diesel", "must be one of bev, phev, ice"),
    ("product.brand", "==", "x" * 201, "must be text of at most 200 characters"),
    ("product.brand", "contains", "", "must be text of 1–200 characters"),
    ("product.attributes.connectors", "contains", "type3", "must be one of type1"),
    ("geofence.metadata.operator", "==", {"a": 1}, "must be text"),
    ("geofence.metadata.operator", "==", [1], "must be text"),
    ("geofence.metadata.levels", ">", "two", "must be a number from -1e+12 to 1e+12 or a local time"),
])
def test_operands_of_the_wrong_type_are_named(fact, op, value, message):
    problems = _problems(fact, op, value)

    assert problems and problems[0][0] == "" and problems[0][1].startswith(message), problems


def test_a_list_operand_names_the_offending_item():
    assert _problems("product.attributes.length_m", "in", [2.5, "3", 4, None]) == [
        (".1", "must be a number from -1e+12 to 1e+12"), (".3", "must be a number from -1e+12 to 1e+12")]


@pytest.mark.parametrize(("fact", "op"), [
    ("product.brand", "<"),  # ordering needs a number or a time
    ("product.attributes.powertrain", "contains"),
    ("product.attributes.length_m", "contains"),
    ("product.attributes.connectors", "=="),
    ("product.attributes.connectors", "in"),
    ("product.telemetry.service_due_at", "<"),
    ("product.telemetry.tire_pressure_bar", "contains"),
    ("trip.destination", "=="),
])
def test_an_operator_that_does_not_fit_the_fact_is_refused(fact, op):
    with pytest.raises(NotApplicable, match=f"'{op}' does not apply to {fact}"):
        operand_for(FACTS[fact], fact, op)


def test_exists_applies_to_every_fact_and_takes_no_operand():
    for name, fact in FACTS.items():
        assert "exists" in ops_for(fact)
        assert operand_for(fact, name, "exists") is None
