"""Operators: which apply to which kind of fact, what their operand must be, and what they compute.

The operand a (fact, op) pair needs is described by an :class:`Operand`, so
that saving a rule (:func:`check_operand`) and documenting it (the OpenAPI
schema built from it) can never disagree. :func:`apply` runs an operator on
a context's value; it never raises: a value of an unexpected type makes the
condition false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .facts import ANY, DATETIME, LOCATION, NUMBER, NUMBER_LIST, STRING, STRING_LIST, TIME, Fact
from .limits import MAX_ABS_NUMBER, MAX_LIST_VALUES, MAX_TEXT_LENGTH
from .values import is_bounded_number, is_integer, is_number, is_scalar, is_time, minutes, same

EQUALITY = ("==", "!=")
ORDERING = ("<", "<=", ">", ">=")
OPS = (*EQUALITY, *ORDERING, "in", "contains", "exists")

# Operand types.
NUMERIC, TEXT, CHOICE, LOCAL_TIME, SCALAR, ORDERED = "number", "string", "enum", "time", "scalar", "ordered"


@dataclass(frozen=True)
class Operand:
    """What a leaf's ``value`` must be: one value of ``type``, or (``many``) a list of 1–MAX_LIST_VALUES of them."""

    type: str
    many: bool = False
    integer: bool = False
    minimum: float = -MAX_ABS_NUMBER
    maximum: float = MAX_ABS_NUMBER
    enum: tuple[str, ...] = ()
    min_length: int = 0
    max_length: int = MAX_TEXT_LENGTH

    def one(self) -> "Operand":
        """The operand of one element of a list operand."""
        return Operand(self.type, False, self.integer, self.minimum, self.maximum, self.enum,
                       self.min_length, self.max_length)


class NotApplicable(Exception):
    """The operator does not apply to this kind of fact; the message says which do."""


def _number(fact: Fact, many: bool = False) -> Operand:
    low = fact.minimum if fact.minimum is not None else -MAX_ABS_NUMBER
    high = fact.maximum if fact.maximum is not None else MAX_ABS_NUMBER
    return Operand(NUMERIC, many, fact.integer, low, high)


def _text(fact: Fact, many: bool = False, min_length: int = 0) -> Operand:
    if fact.enum:
        return Operand(CHOICE, many, enum=fact.enum)
    return Operand(TEXT, many, min_length=min_length)


def _operands(fact: Fact) -> dict[str, Operand | None]:
    """The operators a fact of this kind takes, each with its operand (None: takes none)."""
    table: dict[str, Operand | None] = {"exists": None}
    if fact.kind == NUMBER:
        table.update({op: _number(fact) for op in (*EQUALITY, *ORDERING)}, **{"in": _number(fact, many=True)})
    elif fact.kind == TIME:
        table.update({op: Operand(LOCAL_TIME) for op in (*EQUALITY, *ORDERING)},
                     **{"in": Operand(LOCAL_TIME, many=True)})
    elif fact.kind == STRING:
        table.update({op: _text(fact) for op in EQUALITY}, **{"in": _text(fact, many=True)})
        if not fact.enum:
            table["contains"] = _text(fact, min_length=1)
    elif fact.kind == STRING_LIST:
        table["contains"] = _text(fact, min_length=1)
    elif fact.kind == ANY:
        table.update({op: Operand(SCALAR) for op in EQUALITY}, **{op: Operand(ORDERED) for op in ORDERING})
        table.update({"in": Operand(SCALAR, many=True), "contains": Operand(SCALAR, min_length=1)})
    # NUMBER_LIST, DATETIME, LOCATION: only whether they exist.
    return dict(sorted(table.items(), key=lambda item: OPS.index(item[0])))


_KIND_WORDS = {NUMBER: "a number", STRING: "text", TIME: "a local time", STRING_LIST: "a list of text",
               NUMBER_LIST: "a list of numbers", DATETIME: "a date and time", LOCATION: "a location",
               ANY: "any value"}


def ops_for(fact: Fact) -> tuple[str, ...]:
    """The operators that apply to ``fact``."""
    return tuple(_operands(fact))


def operand_for(fact: Fact, name: str, op: str) -> Operand | None:
    """The operand ``op`` needs on ``fact`` (None: no operand); :class:`NotApplicable` when it does not apply."""
    table = _operands(fact)
    if op not in table:
        raise NotApplicable(f"'{op}' does not apply to {name}, which is {_KIND_WORDS[fact.kind]}; "
                            f"use one of {', '.join(table)}")
    return table[op]


def describe(operand: Operand) -> str:
    """What a value of ``operand`` must be, for a person."""
    if operand.many:
        return f"a list of 1–{MAX_LIST_VALUES} values, each {describe(operand.one())}"
    if operand.type == NUMERIC:
        if operand.integer:
            return f"an integer from {operand.minimum:g} to {operand.maximum:g}"
        return f"a number from {operand.minimum:g} to {operand.maximum:g}"
    if operand.type == CHOICE:
        return f"one of {', '.join(operand.enum)}"
    if operand.type == LOCAL_TIME:
        return "a local time HH:MM (00:00–23:59)"
    if operand.type == ORDERED:
        return f"a number from {-MAX_ABS_NUMBER:g} to {MAX_ABS_NUMBER:g} or a local time HH:MM"
    text = (f"text of {operand.min_length}–{operand.max_length} characters" if operand.min_length
            else f"text of at most {operand.max_length} characters")
    if operand.type == SCALAR:
        return f"{text}, a number from {-MAX_ABS_NUMBER:g} to {MAX_ABS_NUMBER:g}, or true/false"
    return text


def _accepts(operand: Operand, value: Any) -> bool:
    if operand.type == NUMERIC:
        if operand.integer and not is_integer(value):
            return False
        return is_number(value) and operand.minimum <= value <= operand.maximum
    if operand.type == CHOICE:
        return isinstance(value, str) and value in operand.enum
    if operand.type == LOCAL_TIME:
        return is_time(value)
    if operand.type == ORDERED:
        return is_bounded_number(value) or is_time(value)
    if isinstance(value, str):
        return operand.min_length <= len(value) <= operand.max_length
    return operand.type == SCALAR and is_scalar(value) and (isinstance(value, bool) or is_bounded_number(value))


def check_operand(operand: Operand, value: Any) -> list[tuple[str, str]]:
    """Problems with ``value`` as ``operand``: ``(suffix, message)``, suffix "" or ".<index>" for list items."""
    if not operand.many:
        return [] if _accepts(operand, value) else [("", f"must be {describe(operand)}")]
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LIST_VALUES:
        return [("", f"must be {describe(operand)}")]
    one = operand.one()
    return [(f".{index}", f"must be {describe(one)}") for index, item in enumerate(value)
            if not _accepts(one, item)]


def _ordered(op: str, actual: Any, operand: Any) -> bool:
    if is_number(operand):
        if not is_number(actual):
            return False
        left, right = actual, operand
    else:
        left_m, right_m = minutes(actual), minutes(operand)
        if left_m is None or right_m is None:
            return False
        left, right = left_m, right_m
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def apply(op: str, actual: Any, operand: Any = None) -> bool:
    """Whether ``actual`` (a context's value, None when missing) satisfies ``op operand``.

    A missing fact satisfies nothing but ``not exists`` (so ``!=`` on a missing fact is false).
    """
    if op == "exists":
        return actual is not None
    if actual is None:
        return False
    if op == "==":
        return same(actual, operand)
    if op == "!=":
        return not same(actual, operand)
    if op in ORDERING:
        return _ordered(op, actual, operand)
    if op == "in":
        return isinstance(operand, list) and any(same(actual, item) for item in operand)
    if op == "contains":
        if isinstance(actual, list):
            return any(same(item, operand) for item in actual)
        return isinstance(actual, str) and isinstance(operand, str) and operand in actual
    return False
