"""The spot search's answer as JSON text, assembled from pieces kept per spot, fit and decision.

An item of ``GET /v1/spots`` is mostly what does not change between
searches: the spot's id, geometry, kind and source; the fit reasons for a
vehicle; the rule decision for a start and a duration. Turning 20 items into
dicts and then into JSON costs about 0.5 ms a search (BENCHMARKS.md, 2);
kept as JSON text per spot (on the index), per (vehicle, spot) and per
decision, an answer is joined from them in a few microseconds an item. Only
the distance and the spaces for the vehicle are written per search.

Nothing is kept per (spot, decision): a decision belongs to a start time, and
a client that searches "now" brings a new start every second, so such a cache
would mostly miss. The spots an answer meets for the first time are
serialised together, with one pass over their coordinates
(:func:`~geodata.search.to_dicts`).

:func:`answer_json` gives the same document as ``json.dumps({"items":
to_dicts(results)}, ensure_ascii=False, separators=(",", ":"))``, fields in
the same order (a unit test compares them; a distance may carry a trailing
zero). It writes from a search's columns (:class:`~geodata.search.FoundSpots`);
results that come from no single search over a
:class:`~geodata.index.SpotIndex` (PostGIS candidates, lists put together)
take the ``to_dicts`` way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from json.encoder import c_make_encoder, encode_basestring
from typing import Any, Callable

from geodata.results import FoundSpots, SpotResult, geojson_geometries, to_dicts

# Spots whose text is kept per index (~400 bytes each), and per vehicle their fit reasons (~100 bytes).
_SPOTS_MAX = 200_000
_VEHICLES_MAX = 64
_DECISIONS_MAX = 20_000
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _compact_encoder() -> Callable[[Any], str]:
    """``_ENCODER.encode``, with the C encoder built once instead of on every call.

    ``JSONEncoder.encode`` builds a new C encoder per call, ~5 µs: most of the
    cost for the small pieces written here. No circular-reference check: the
    pieces are plain dicts, lists, strings and numbers built in this module.
    """
    if c_make_encoder is None:  # a Python without the C accelerator
        return _ENCODER.encode
    chunks = c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(chunks(value, 0))


_encode = _compact_encoder()
# id(decision) -> (decision, text): the decision is held, so its id cannot be reused while the entry lives.
_decision_parts: dict[int, tuple[Any, str, str]] = {}


def _json_value(value: Any) -> str:
    """``_encode(value)``, with the common cases (text, nothing) written directly."""
    if type(value) is str:
        return encode_basestring(value)
    return "null" if value is None else _encode(value)


def _number(value: Any) -> str:
    """A float field (``length_m``) as the response schema dumps it: ``float``, then JSON."""
    if value is None:
        return "null"
    number = float(value)
    return repr(number) if math.isfinite(number) else _encode(number)  # the encoder refuses nan/inf


def _spot_texts(found: FoundSpots, spots: list[Any], index: Any) -> list[tuple[str, str, str]]:
    """Each result's spot fields as JSON text, in three parts so that the item keeps the schema's field order:
    ``id`` and ``geometry`` (before ``distance_m``), ``kind`` to ``fits`` (before ``spaces_for_vehicle``),
    and ``source`` (last)."""
    cache = index.item_json
    texts = list(map(cache.get, spots))
    if None in texts:
        missing = [i for i, text in enumerate(texts) if text is None]
        if len(cache) + len(missing) > _SPOTS_MAX:
            cache.clear()
        results = [found[i] for i in missing]
        for i, result, geometry in zip(missing, results, geojson_geometries(results)):
            spot = spots[i]
            texts[i] = cache[spot] = (
                f'"id":{_json_value(result.id)},"geometry":{_encode(geometry)}',
                f'"kind":{_json_value(spot.kind)},"orientation":{_json_value(spot.orientation)},'
                f'"length_m":{_number(spot.length_m)},"fits":true',
                f'"source":{{"dataset":{_json_value(spot.source_dataset)},'
                f'"feature_id":{_json_value(spot.source_feature_id)}}}')
    return texts  # type: ignore[return-value]


def _fit_cache(index: Any, vehicle: Any) -> dict[Any, str]:
    """The vehicle's fit reasons as JSON list items, per spot (vehicles hash by value)."""
    by_vehicle = index.fit_json
    cache = by_vehicle.get(vehicle)
    if cache is None:
        if len(by_vehicle) >= _VEHICLES_MAX:
            by_vehicle.clear()
        cache = by_vehicle[vehicle] = {}
    return cache


def _fit_texts(found: FoundSpots, spots: list[Any], index: Any) -> list[str]:
    """Each result's fit reasons as JSON list items."""
    cache = _fit_cache(index, found.vehicle)
    texts = list(map(cache.get, spots))
    if None in texts:
        for i, text in enumerate(texts):
            if text is None:
                if len(cache) >= _SPOTS_MAX:
                    cache.clear()
                texts[i] = cache[spots[i]] = _encode(list(found[i]._fit_reasons()))[1:-1]
    return texts


def _decision_part(decision: Any) -> tuple[str, str]:
    """The decision's fields (``allowed_until``, ``max_stay_min``, ``fee``) and its reasons, as JSON text."""
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


def _columns(results: Sequence[SpotResult]) -> FoundSpots | None:
    """The search columns to write ``results`` from: a :class:`FoundSpots`, or those of the list
    :func:`~geodata.search.search` returned while it still holds them in order (a list can be changed after
    the search); None otherwise."""
    if isinstance(results, FoundSpots):
        return results
    found = getattr(results, "found", None)
    if found is None or len(found) != len(results):
        return None
    spots = found.index.spots
    if any(result.spot is not spots[q] for result, q in zip(results, found.positions)):
        return None
    return found


def answer_json(results: Sequence[SpotResult]) -> str:
    """``{"items": [...]}`` for a search's results, as compact JSON text (UTF-8 characters kept)."""
    if not results:
        return '{"items":[]}'
    found = _columns(results)
    if found is None or getattr(found.index, "item_json", None) is None:
        return _encode({"items": to_dicts(list(results))})
    index = found.index
    every_spot = index.spots
    spots = [every_spot[q] for q in found.positions]
    items = []
    for (head, middle, tail), fit_why, distance, spaces, decision in zip(
            _spot_texts(found, spots, index), _fit_texts(found, spots, index), found.distances, found.spaces,
            found.decisions):
        fields, rule_why = _decision_part(decision)
        why = fit_why + "," + rule_why if fit_why and rule_why else fit_why or rule_why
        # "%.2f" rounds as round(x, 2) does (correctly, from the binary value), and writes the same number in
        # a third of the time repr(round(x, 2)) takes; only trailing zeros may differ ("3.50" for 3.5).
        items.append(f'{{{head},"distance_m":{"%.2f" % distance},{middle},'
                     f'"spaces_for_vehicle":{spaces},{fields},"why":[{why}],{tail}}}')
    return '{"items":[' + ",".join(items) + "]}"
