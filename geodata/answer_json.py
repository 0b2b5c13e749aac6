"""The spot search's answer as JSON text, assembled from pieces kept per spot, fit and decision.

An item of ``GET /v1/spots`` is mostly what does not change between
searches: the spot's id, geometry, kind and source; the fit reasons for a
vehicle; the rule decision for a start and a duration. Turning 20 items into
dicts and then into JSON costs about 0.5 ms a search (BENCHMARKS.md, 2);
kept as JSON text per spot (on the index, like the fit reasons) and per
decision, an answer is joined from them in a few microseconds an item. Only
the distance and the spaces for the vehicle are written per search.

:func:`answer_json` gives the same document as ``json.dumps({"items":
to_dicts(results)})`` (a unit test compares them); results that do not come
from a :class:`~geodata.index.SpotIndex` (PostGIS candidates) take that way.
"""

from __future__ import annotations

import json
from typing import Any

from geodata.search import SpotResult, to_dicts

# Spots whose item text is kept per index (~400 bytes each), and decisions kept per process.
_SPOTS_MAX = 200_000
_DECISIONS_MAX = 20_000
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# id(decision) -> (decision, text): the decision is held, so its id cannot be reused while the entry lives.
_decision_parts: dict[int, tuple[Any, str, str]] = {}
# (spot, vehicle) fit reasons as JSON list items; spots hash by identity.
_FIT_KEY = "fit_json"
# The spot's own fields, before distance_m, between it and the decision, and last (SpotSchema's order).
_SPOT_KEYS = (("id", "geometry"), ("kind", "orientation", "length_m", "fits"), ("source",))


def _spot_parts(result: SpotResult, index: Any) -> tuple[str, str, str]:
    """The spot's fields as JSON text, in three parts so that the item keeps the schema's field order."""
    cache = index.item_json
    spot = result.spot
    found = cache.get(spot)
    if found is None:
        if len(cache) >= _SPOTS_MAX:
            cache.clear()
        item = to_dicts([result])[0]
        found = cache[spot] = tuple(_encode({k: item[k] for k in keys})[1:-1] for keys in _SPOT_KEYS)
    return found


def _decision_part(decision: Any) -> tuple[str, str]:
    found = _decision_parts.get(id(decision))
    if found is None or found[0] is not decision:
        if len(_decision_parts) >= _DECISIONS_MAX:
            _decision_parts.clear()
        until = decision.allowed_until
        stay = decision.max_stay_min
        fields = _encode({"allowed_until": None if until is None else until.isoformat(),
                          "max_stay_min": None if stay is None else float(stay), "fee": decision.fee})[1:-1]
        found = _decision_parts[id(decision)] = (decision, fields, _encode(list(decision.why))[1:-1])
    return found[1], found[2]


def _fit_part(result: SpotResult, index: Any) -> str:
    cache = index.item_json
    key = (_FIT_KEY, result.spot, result._vehicle)
    found = cache.get(key)
    if found is None:
        found = cache[key] = _encode(list(result._fit_reasons()))[1:-1]
    return found


def _item_parts(result: SpotResult, index: Any) -> tuple[str, str]:
    """The item's text before and after its distance (the only part that changes from search to search).

    Kept per (spot, vehicle, decision) with the decision itself, so that a
    decision dropped from the caches and a new one at its address never meet.
    """
    cache = index.item_json
    decision = result.decision
    key = (result.spot, result._vehicle, id(decision))
    found = cache.get(key)
    if found is None or found[0] is not decision:
        if len(cache) >= _SPOTS_MAX:
            cache.clear()
        fields, rule_why = _decision_part(decision)
        fit_why = _fit_part(result, index)
        why = fit_why + "," + rule_why if fit_why and rule_why else fit_why or rule_why
        head, middle, tail = _spot_parts(result, index)
        found = cache[key] = (
            decision, "{" + head + ',"distance_m":',
            f',{middle},"spaces_for_vehicle":{int(result.spaces_for_vehicle)},{fields},"why":[{why}],{tail}}}')
    return found[1], found[2]


def answer_json(results: list[SpotResult]) -> str:
    """``{"items": [...]}`` for a search's results, as compact JSON text (UTF-8 characters kept)."""
    if not results:
        return '{"items":[]}'
    index = results[0]._index
    if getattr(index, "item_json", None) is None:
        return _encode({"items": to_dicts(results)})
    items = []
    for result in results:
        before, after = _item_parts(result, index)
        items.append(before + repr(round(float(result.distance_m), 2)) + after)
    return '{"items":[' + ",".join(items) + "]}"
