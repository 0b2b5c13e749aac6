"""Untrusted normalized properties → :class:`~geodata.model.Spot`, with per-field issues.

Used by the GeoJSON and CSV readers (whose properties already use the
normalized names) and by the other readers to finish a spot (default kind and
length). A value that cannot be read rejects the feature rather than being
dropped: silently losing a height limit or a no-parking rule could send a
driver into a fine or under a barrier.

Points of interest (the ``pois`` layer) use the same properties plus
``category`` (one of :data:`~geodata.model.POI_CATEGORIES`: ``workshop``,
``dealer``, ``charger``, …), ``opening_hours`` (OSM syntax) and ``brand``.
Those only describe a place and never decide where to park, so a category or
opening hours that cannot be read are dropped with a warning instead.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Mapping

from shapely.geometry.base import BaseGeometry

from geodata import units
from geodata.geo import geometry_length_m
from geodata.model import ACCESS, ACTIVITIES, KINDS, LIMIT_FIELDS, ORIENTATIONS, POI_CATEGORIES, Rate, Rule, Spot
from geodata.validate import ERROR, WARNING, Issue, opening_hours_error

_DEFAULT_KIND = {"LineString": "curb", "Polygon": "lot", "Point": "space"}

# Identical rules and rule lists are shared between spots: a million spots
# usually carry a few hundred distinct rule lists.
_RULE_CACHE: dict[Any, Any] = {}
_CACHE_MAX = 200_000


def intern_rules(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    """The same tuple object for equal rule lists (saves memory and speeds up the index)."""
    key = tuple(rules)
    found = _RULE_CACHE.get(key)
    if found is None:
        if len(_RULE_CACHE) >= _CACHE_MAX:
            _RULE_CACHE.clear()
        found = _RULE_CACHE[key] = tuple(_RULE_CACHE.setdefault(("rule", r), r) for r in key)
    return found


def _spot_maker() -> Any:
    """``Spot(*values)`` (values in field order) without the dataclass ``__init__``'s per-field lookups.

    The generated ``__init__`` of a frozen dataclass sets each field through
    ``object.__setattr__``; this sets the same slots through their
    descriptors, for a third of the cost (it is a good part of normalizing
    a feature). Falls back to the class itself when Spot is not the plain
    frozen slots dataclass this relies on (no ``__post_init__``, the fields
    named below, in that order).
    """
    names = tuple(f.name for f in dataclasses.fields(Spot))
    slots = [Spot.__dict__.get(name) for name in names]
    if (names != _SPOT_FIELDS or hasattr(Spot, "__post_init__")
            or not all(type(slot).__name__ == "member_descriptor" for slot in slots)):
        return Spot
    namespace: dict[str, Any] = {"_new": object.__new__, "_Spot": Spot}
    lines = []
    for i, (name, slot) in enumerate(zip(names, slots)):
        namespace[f"_set{i}"] = slot.__set__
        lines.append(f"    _set{i}(spot, {name})\n")
    source = f"def make_spot({', '.join(names)}):\n    spot = _new(_Spot)\n{''.join(lines)}    return spot\n"
    exec(source, namespace)  # noqa: S102 — generated from the dataclass's own field names
    return namespace["make_spot"]


_SPOT_FIELDS = ("geometry", "kind", "orientation", "length_m", *LIMIT_FIELDS, "capacity", "rules", "connectors",
                "power_kw", "name", "operator", "source_dataset", "source_feature_id", "category", "opening_hours",
                "brand")
_make_spot = _spot_maker()


def default_kind(geometry: BaseGeometry) -> str | None:
    """The kind assumed when a feature gives none: a line is a curb, a polygon a lot, a point a space."""
    return _DEFAULT_KIND.get(geometry.geom_type)


def default_length_m(geometry: BaseGeometry, kind: str | None, length_m: float | None) -> float | None:
    """The given length, or the geodesic length of a curb LineString."""
    if length_m is None and kind == "curb" and geometry.geom_type == "LineString":
        return round(geometry_length_m(geometry), 2)
    return length_m


class _Collector:
    """Collects issues for one feature while reading its fields."""

    def __init__(self, feature: int | str) -> None:
        self.feature = feature
        self.issues: list[Issue] = []

    def error(self, field: str, message: str, code: str = "invalid") -> None:
        self.issues.append(Issue(self.feature, field, message, ERROR, code))

    def warn(self, field: str, message: str, code: str = "ignored") -> None:
        self.issues.append(Issue(self.feature, field, message, WARNING, code))

    @property
    def failed(self) -> bool:
        return any(i.level == ERROR for i in self.issues)

    def unit(self, field: str, value: Any, parser: Any, **kwargs: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            return parser(value, **kwargs)
        except units.UnitError as exc:
            self.error(field, f"{field} {exc}")
            return None


def _choice(c: _Collector, field: str, value: Any, allowed: tuple[str, ...]) -> str | None:
    if value in allowed:
        return value
    if value is None or value == "":
        return None
    text = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    if text == "angled":
        text = "diagonal"
    if text not in allowed:
        c.error(field, f"{field} '{value}' is not one of {', '.join(allowed)}")
        return None
    return text


def _rate(c: _Collector, field: str, value: Any) -> Rate | None:
    if value is None or value == "":
        return None
    if not isinstance(value, dict) or "amount" not in value:
        c.error(field, f"{field} must be an object with an amount, e.g. {{\"amount\": 2.5, \"per_min\": 60}}")
        return None
    try:
        amount = float(value["amount"])
        per_min = value.get("per_min")
        return Rate(amount, None if per_min is None else float(per_min), value.get("currency"))
    except (TypeError, ValueError):
        c.error(field, f"{field} amount '{value.get('amount')}' is not a number")
        return None


def parse_rule(c: _Collector, field: str, data: Any) -> Rule | None:
    """One rule object in the normalized shape; problems go to the collector."""
    if not isinstance(data, dict):
        c.error(field, f"{field} must be an object with at least an activity")
        return None
    when = data.get("when")
    if isinstance(when, str) and not when.strip():
        when = None
    if isinstance(when, str):
        when = when.strip()
        problem = opening_hours_error(when)
        if problem:
            c.error(f"{field}.when", f"when '{when}' is not valid opening_hours syntax ({problem})")
    elif when is not None:
        c.error(f"{field}.when", f"when must be an opening_hours string or null, not {when!r}")
    if data.get("activity") in (None, ""):
        c.error(f"{field}.activity", "activity is missing (parking, no_parking, no_stopping or loading)")
        activity = None
    else:
        activity = _choice(c, f"{field}.activity", data.get("activity"), ACTIVITIES)
    access = _choice(c, f"{field}.access", data.get("access"), ACCESS) or "public"
    max_stay = c.unit(f"{field}.max_stay_min", data.get("max_stay_min"), units.parse_duration_min)
    fee = False
    if data.get("fee") not in (None, ""):
        try:
            fee = units.parse_bool(data["fee"])
        except units.UnitError as exc:
            c.error(f"{field}.fee", f"fee {exc}")
    rate = _rate(c, f"{field}.rate", data.get("rate"))
    if activity is None or c.failed:
        return None
    return Rule(when, activity, access, max_stay, fee or (rate is not None and rate.amount > 0), rate)


_PARSED: dict[Any, tuple[Rule | None, tuple[tuple[str, str, str, str], ...]]] = {}
_SLOT = "rules[#]"
# Whole rule lists that parsed without a problem, by the raw keys of their rules.
_LISTS: dict[Any, tuple[Rule, ...]] = {}


def _rule_key(data: Any) -> Any:
    """A hashable key for a rule object made of scalars (the common case), else None."""
    if type(data) is not dict:
        return None
    if type(data.get("rate")) is dict:  # the one nested object a rule has: no failed first try
        key = tuple((k, tuple(v.items()) if k == "rate" else v) for k, v in data.items())
    else:
        key = tuple(data.items())
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _rule_key_unchecked(data: Any) -> Any:
    """:func:`_rule_key` without its hash check (hashing the whole list's key checks them all at once)."""
    if type(data) is not dict:
        return None
    if type(data.get("rate")) is dict:
        return tuple((k, tuple(v.items()) if k == "rate" else v) for k, v in data.items())
    return tuple(data.items())


def _parse_rule_cached(c: _Collector, index: int, data: Any) -> Rule | None:
    """parse_rule, remembered per distinct rule object: a million features share a few rule shapes."""
    key = _rule_key(data)
    found = _PARSED.get(key) if key is not None else None
    if found is None:
        scratch = _Collector(c.feature)
        rule = parse_rule(scratch, _SLOT, data)
        found = (rule, tuple((i.field, i.message, i.level, i.code) for i in scratch.issues))
        if key is not None:
            if len(_PARSED) >= _CACHE_MAX:
                _PARSED.clear()
            _PARSED[key] = found
    rule, problems = found
    slot = f"rules[{index}]"
    for field, message, level, code in problems:
        c.issues.append(Issue(c.feature, field.replace(_SLOT, slot), message.replace(_SLOT, slot), level, code))
    return rule


def _rules(c: _Collector, value: Any, *, place: bool = False) -> tuple[Rule, ...]:
    if value is None or value == "":
        if not place:  # a workshop or a dealer has no parking rules, and needs none
            c.warn("rules", "no rules: nobody may park here at any time, so the spot is never offered", "no_rules")
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            c.error("rules", f"rules is not valid JSON ({exc.msg} at character {exc.pos})")
            return ()
    if not isinstance(value, list):
        c.error("rules", "rules must be a list of rule objects")
        return ()
    keys = tuple([_rule_key_unchecked(r) for r in value])
    try:
        found = _LISTS.get(keys) if None not in keys else None
    except TypeError:  # some rule holds a list or an object: key each rule the careful way
        keys = tuple([_rule_key(r) for r in value])
        found = _LISTS.get(keys) if None not in keys else None
    if found is not None:
        return found
    before = len(c.issues)
    parsed = [_parse_rule_cached(c, i, r) for i, r in enumerate(value)]
    rules = intern_rules(r for r in parsed if r is not None)
    if None not in keys and len(c.issues) == before:
        if len(_LISTS) >= _CACHE_MAX:
            _LISTS.clear()
        _LISTS[keys] = rules
    return rules


def _strings(c: _Collector, field: str, value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                c.error(field, f"{field} is not a valid JSON list")
                return ()
        else:
            return tuple(p.strip() for p in value.split(";") if p.strip())
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        c.error(field, f"{field} must be a list of names")
        return ()
    return tuple(value)


def _category(c: _Collector, value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower().replace(" ", "_").replace("-", "_")
    if text not in POI_CATEGORIES:
        c.warn("category", f"category '{value}' is not one of {', '.join(POI_CATEGORIES)}; ignored")
        return None
    return text


def _opening_hours(c: _Collector, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip():
        c.warn("opening_hours", "opening_hours must be an OSM opening_hours string; ignored")
        return None
    value = value.strip()
    problem = opening_hours_error(value)
    if problem:
        c.warn("opening_hours", f"opening_hours '{value}' is not valid opening_hours syntax ({problem}); ignored")
        return None
    return value


def place_properties(c: _Collector, props: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``category``, ``opening_hours`` and ``brand`` of a point of interest (each None when absent or unreadable)."""
    get = props.get
    category = None if get("category") is None else _category(c, get("category"))
    hours = None if get("opening_hours") is None else _opening_hours(c, get("opening_hours"))
    brand = get("brand")
    return category, hours, None if brand is None or brand == "" else str(brand)


def spot_from_properties(
    props: Mapping[str, Any],
    geometry: BaseGeometry,
    *,
    feature: int | str,
    dataset: str | None,
    feature_id: str | None,
) -> tuple[Spot | None, list[Issue]]:
    """Read normalized properties into a Spot; ``(None, issues)`` when the feature is rejected."""
    c = _Collector(feature)
    get = props.get
    unit = c.unit
    # Absent fields (most of them) are skipped here rather than in c.unit: the same result, fewer calls.
    category = opening_hours = brand = None
    if get("category") is not None or get("opening_hours") is not None or get("brand") is not None:
        category, opening_hours, brand = place_properties(c, props)
    value = get("kind")
    kind = value if value in KINDS else _choice(c, "kind", value, KINDS)
    if kind is None:
        # A place (a workshop) is not somewhere to park: no kind is made up for it, except a charger's.
        kind = default_kind(geometry) if category is None else ("charger" if category == "charger" else None)
    value = get("orientation")
    orientation = value if value in ORIENTATIONS else _choice(c, "orientation", value, ORIENTATIONS)
    value = get("length_m")
    length = None if value is None else unit("length_m", value, units.parse_length_m)
    if length is not None and length <= 0:
        c.error("length_m", f"length_m '{props.get('length_m')}' must be more than 0")
    value = get("max_vehicle_length_m")
    max_length = None if value is None else unit("max_vehicle_length_m", value, units.parse_length_m)
    value = get("max_vehicle_width_m")
    max_width = None if value is None else unit("max_vehicle_width_m", value, units.parse_length_m)
    value = get("max_vehicle_height_m")
    max_height = None if value is None else unit("max_vehicle_height_m", value, units.parse_length_m)
    value = get("max_vehicle_weight_kg")
    max_weight = None if value is None else unit(
        "max_vehicle_weight_kg", value, units.parse_weight_kg, default_unit="kg"
    )
    value = get("capacity")
    capacity = None if value is None else unit("capacity", value, units.parse_count)
    value = get("power_kw")
    power = None if value is None else unit("power_kw", value, units.parse_power_kw)
    rules = _rules(c, get("rules"), place=category is not None)
    value = get("connectors")
    connectors = () if value is None else _strings(c, "connectors", value)
    source = get("source")
    if isinstance(source, dict) and source.get("feature_id") not in (None, ""):
        feature_id = str(source["feature_id"])
    if c.issues and c.failed:
        return None, c.issues
    name, operator = get("name"), get("operator")
    spot = _make_spot(  # Spot(...), fields in _SPOT_FIELDS order
        geometry,
        kind,
        orientation,
        default_length_m(geometry, kind, length),
        max_length,
        max_width,
        max_height,
        max_weight,
        capacity,
        rules,
        connectors,
        power,
        None if name is None or name == "" else str(name),
        None if operator is None or operator == "" else str(operator),
        dataset,
        feature_id,
        category,
        opening_hours,
        brand,
    )
    return spot, c.issues
