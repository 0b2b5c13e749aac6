"""The stored form of imported spots: one row of layer-feature columns per spot, JSON serialised once.

The importer's hot path (a million spots per file): properties are written as
``Spot.to_properties`` writes them, with the rule list (shared by many spots)
encoded once and spliced in; anything no database here can store (NUL, lone
surrogates, non-finite numbers) is replaced on the way (:func:`storable`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from geodata.model import Rule, Spot

from .layers import dumps_json_strict, geometry_values

MAX_TEXT = 500  # characters of an issue's message or feature label that are kept
MAX_FEATURE_ID = 300  # the column's length
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What json.dumps (ensure_ascii) makes of those characters: text without this is storable as it is.
_UNSTORABLE_ESCAPED = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def storable(value: Any) -> Any:
    """``value`` with what no database here can store replaced.

    NUL and unpaired surrogates (PostgreSQL refuses them in text and jsonb)
    become U+FFFD; infinite or NaN numbers (not JSON) become null.
    """
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def short(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` storable and cut to ``limit`` characters (an ellipsis marks the cut)."""
    text = storable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Rule lists as JSON text, by the identity of the (interned) tuple: a million spots share a few hundred.
_RULES_JSON: dict[int, tuple[tuple[Rule, ...], str | None]] = {}
_RULES_JSON_MAX = 10_000
# Stands for the rule list in the one json.dumps of a spot's properties, then replaced by its cached text.
_RULES_SLOT = "\x01rules\x01"
_RULES_SLOT_JSON = json.dumps(_RULES_SLOT)


def _rules_json(rules: tuple[Rule, ...]) -> str | None:
    """``json.dumps`` of the rule list as ``Spot.to_properties`` writes it; None unless plain storable JSON."""
    found = _RULES_JSON.get(id(rules))
    if found is not None and found[0] is rules:
        return found[1]
    try:
        text: str | None = dumps_json_strict([rule.to_dict() for rule in rules])
    except ValueError:
        text = None
    if text is not None and _UNSTORABLE_ESCAPED.search(text):
        text = None
    if len(_RULES_JSON) >= _RULES_JSON_MAX:
        _RULES_JSON.clear()
    _RULES_JSON[id(rules)] = (rules, text)  # the tuple is kept alive, so its id is not reused
    return text


def properties_json(spot: Spot) -> str:
    """``json.dumps(storable(spot.to_properties()))``, without rebuilding the rules' dicts for every spot.

    The properties are ``to_properties``'s with a placeholder for the rule
    list, serialised once, and the placeholder replaced by the rule list's
    cached text. Whenever the text
    shows something :func:`storable` would change (NUL, a surrogate, a
    non-finite number) or the placeholder is not found exactly once, the
    spot takes the plain path.
    """
    props = spot.to_properties(rules=_RULES_SLOT)
    rules = _rules_json(spot.rules)
    if rules is not None:
        try:
            text = dumps_json_strict(props)
        except ValueError:  # a non-finite number
            pass
        else:
            if text.count(_RULES_SLOT_JSON) == 1 and not _UNSTORABLE_ESCAPED.search(text):
                return text.replace(_RULES_SLOT_JSON, rules)
    return json.dumps(storable(spot.to_properties()))


def feature_values(pending: list[tuple[Spot, int]], first_seq: int) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The stored columns (:data:`~smartsvc.services.layers.VALUE_COLUMNS`) of a batch of spots from ``first_seq``,
    and their geometries."""
    geometries = [spot.geometry for spot, _ in pending]
    rows = []
    seq = first_seq
    for (spot, index), (geometry, min_lon, min_lat, max_lon, max_lat) in zip(pending, geometry_values(geometries)):
        feature_id = spot.source_feature_id
        if feature_id is not None and (type(feature_id) is not str or len(feature_id) > MAX_FEATURE_ID
                                       or _UNSTORABLE.search(feature_id)):
            feature_id = short(str(feature_id), MAX_FEATURE_ID)
        rows.append((seq, index, feature_id, spot.kind, geometry, properties_json(spot),
                     min_lon, min_lat, max_lon, max_lat))
        seq += 1
    return rows, geometries
