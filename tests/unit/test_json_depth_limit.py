"""The nesting limit on a feature's properties: ``deeper_than`` agrees with ``json_depth`` on every shape."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from geodata.validate import deeper_than, json_depth

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=40,
)


@given(json_values, st.integers(min_value=-1, max_value=12))
def test_deeper_than_is_json_depth_past_the_limit(value, limit):
    assert deeper_than(value, limit) == (json_depth(value) > limit)


@pytest.mark.parametrize("depth", [31, 32, 33, 5000])
def test_a_deeply_nested_value_is_judged_without_recursion(depth):
    value: object = "leaf"
    for _ in range(depth):
        value = [value]

    assert deeper_than(value, 32) == (depth > 32)
