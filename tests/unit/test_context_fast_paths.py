"""The context batch's shortcuts agree with the slow, complete checks they skip.

``plain_location`` loads a well-formed location event without the schema's
field machinery. It may decline (the schema then runs and names the
problem), but what it accepts must be exactly what the schema would give.
The body check walks a batch once and names the offending field only when
there is one.
"""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import marshmallow as ma
import pytest

from smartsvc.errors import ApiError
from smartsvc.http.api import MAX_JSON_DEPTH, _check_json_body
from smartsvc.http.context import ContextLocationEventSchema, _event_schema, plain_location
from smartsvc.timeutil import utcnow


def _base() -> dict[str, Any]:
    at = (utcnow() - timedelta(minutes=3)).astimezone(timezone(timedelta(hours=1)))
    return {"type": "location", "at": at.isoformat(), "lat": 52.520008, "lon": 13.404954, "accuracy_m": 8,
            "speed_mps": 9.5, "heading": 271.0}


_NUMBERS = [0, 1, -1, 52.5, 90, 90.0000001, -90, -90.0000001, 180, 181, 200, 200.5, 360, 361, 100_000, 100_001,
            "52.5", True, False, None, float("nan"), float("inf"), float("-inf"), 10 ** 400, [], {}]


def _times() -> list[Any]:
    now = utcnow()
    return [now.isoformat(), (now + timedelta(minutes=4)).isoformat(), (now + timedelta(minutes=6)).isoformat(),
            now.replace(tzinfo=None).isoformat(), now.strftime("%Y-%m-%dT%H:%M:%SZ"), "1969-12-31T23:59:59+00:00",
            "1970-01-01T00:00:00+00:00", "2026-11-27", "2026-11-27T10:00:00+25:00", "yesterday", "", 1_700_000_000,
            None, "2026-11-27T10:00:00.123456-03:30", "20261127T100000+0100"]


def _variants() -> list[dict[str, Any]]:
    out = [_base()]
    for name in ("lat", "lon", "accuracy_m", "speed_mps", "heading"):
        for number in _NUMBERS:
            out.append({**_base(), name: number})
        without = _base()
        del without[name]
        out.append(without)
    for at in _times():
        out.append({**_base(), "at": at})
    out.append({**_base(), "extra": 1})
    out.append({**_base(), "type": "activity"})
    out.append({**_base(), "type": "Location"})
    minimal = _base()
    del minimal["speed_mps"], minimal["heading"]
    out.append(minimal)
    return out


def _schema_load(value: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return _event_schema("location").load(value)
    except ma.ValidationError:
        return None


def _typed(loaded: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    return {name: (type(value), value) for name, value in loaded.items()}


@pytest.mark.parametrize("value", _variants(), ids=lambda v: repr(v)[:80])
def test_a_location_event_the_shortcut_accepts_is_loaded_exactly_as_the_schema_loads_it(value):
    fast = plain_location(value)
    if fast is not None:
        slow = _schema_load(value)
        assert slow is not None, "the shortcut accepted an event the schema refuses"
        assert _typed(fast) == _typed(slow)


def test_ordinary_location_events_take_the_shortcut():
    locations = [v for v in _variants() if v["type"] == "location"]
    taken = [v for v in locations if plain_location(v) is not None]
    accepted = [v for v in locations if _schema_load(v) is not None]
    # Every event the schema accepts as a phone sends it (numbers, an offset time) is taken; the
    # shortcut declines only odd forms the schema still takes (none in this list).
    assert len(taken) == len(accepted) > 40


def test_other_event_types_are_left_to_their_schemas():
    assert plain_location({**_base(), "type": "activity"}) is None
    assert plain_location({**_base(), "type": "Location"}) is None


def test_the_shortcut_knows_the_schemas_fields():
    fields = set(ContextLocationEventSchema().fields)
    assert {"type", "at", "lat", "lon", "accuracy_m", "speed_mps", "heading"} == fields


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize("body, field", [
    ({"events": [_base() for _ in range(500)]}, None),
    (_nested(MAX_JSON_DEPTH, 1), None), (_nested(MAX_JSON_DEPTH, {}), None), (_nested(MAX_JSON_DEPTH, []), None),
    (_nested(MAX_JSON_DEPTH - 1, [1]), None), ([[[]]], None), ("text", None), (3, None), (None, None),
    (_nested(MAX_JSON_DEPTH + 1, 1), "body"), (_nested(MAX_JSON_DEPTH, [1]), "body"),
    ({"a\x00": 1}, "a?"), ({"a": "b\x00"}, "a"), ({"a": ["ok", "\ud800"]}, "a.1"), ("\x00", "body"),
    ({"events": [_base(), {"x": {"y\x00z": 1}}]}, "events.1.x.y?z"),
    ({"events": [_base(), {"x": [1, {"y": "\ud800"}]}]}, "events.1.x.1.y"),
], ids=lambda b: repr(b)[:60])
def test_the_body_check_refuses_what_is_too_deep_or_unstorable_and_names_the_field(body, field):
    if field is None:
        _check_json_body(body)
        return
    with pytest.raises(ApiError) as refused:
        _check_json_body(body)
    assert list(refused.value.errors) == [field]
