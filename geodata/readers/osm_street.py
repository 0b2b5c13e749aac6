"""Street parking on OSM road ways: one ``curb`` spot per side that has parking.

Old scheme: ``parking:lane:{both,left,right}`` = ``parallel`` | ``diagonal`` |
``perpendicular`` (``marked``: orientation unknown); ``no_parking``,
``no_stopping``, ``fire_lane``, ``no``, ``separate`` → no spot. Conditions:
``parking:condition:{side}`` (free, ticket, disc, residents, customers,
private, disabled, no_parking, no_stopping, loading) with ``:time_interval``
(the first rule's window), ``:default`` (all other times; none → free public
parking) and ``:maxstay``.

New scheme: ``parking:{side}`` = ``lane`` | ``street_side`` | ``on_kerb`` |
``half_on_kerb`` | ``shoulder`` with ``parking:{side}:orientation``; ``no`` /
``separate`` → no spot. Conditions: ``:restriction`` (+ ``:conditional``),
``:fee`` (+ ``:conditional``), ``:maxstay`` (+ ``:conditional``), ``:access``.

Every ``{side}`` key inherits from ``both``. A condition that is not a time
(``@ wet``) is applied always when it restricts, and ignored when it permits.
"""

from __future__ import annotations

from typing import Any

from geodata import units
from geodata.geo import geometry_length_m
from geodata.model import Rule, Spot
from geodata.normalize import intern_rules
from geodata.validate import opening_hours_error

SIDES = ("left", "right")
_OLD_CURB = {"parallel": "parallel", "diagonal": "diagonal", "perpendicular": "perpendicular", "marked": None}
_OLD_NONE = {"no_parking", "no_stopping", "fire_lane", "no", "separate", "none", "no_standing"}
_NEW_CURB = {"lane", "street_side", "on_kerb", "half_on_kerb", "shoulder", "yes"}
_NEW_NONE = {"no", "separate", "none"}
_PUBLIC_CONDITIONS = {"free", "ticket", "disc", "fee", "yes"}
_CONDITION = {
    "residents": ("parking", "residents"),
    "customers": ("parking", "customers"),
    "private": ("parking", "private"),
    "disabled": ("parking", "disabled"),
    "no_parking": ("no_parking", "public"),
    "no": ("no_parking", "public"),
    "no_stopping": ("no_stopping", "public"),
    "no_standing": ("no_stopping", "public"),
    "loading": ("loading", "public"),
}
_RESTRICTION = {
    "no_parking": ("no_parking", "public"),
    "no_stopping": ("no_stopping", "public"),
    "no_standing": ("no_stopping", "public"),
    "loading_only": ("loading", "public"),
    "charging_only": ("parking", "private"),
    "disabled_only": ("parking", "disabled"),
}
_ACCESS = {"yes": "public", "public": "public", "private": "private", "no": "private", "customers": "customers",
           "residents": "residents", "permit": "permit", "disabled": "disabled", "destination": "customers"}


def tags_for_street(tags: dict[str, Any]) -> bool:
    """True when the tags describe street parking on a road."""
    return any(
        key.startswith("parking:lane:") or key.split(":")[:2] in (["parking", "left"], ["parking", "right"], ["parking", "both"])
        for key in tags
    )


def _side(t: Any, base: str, side: str, suffix: str = "") -> str | None:
    key = f"{base}:{side}{suffix}"
    value = t.get(key)
    return value if value is not None else t.get(f"{base}:both{suffix}")


def _key(t: Any, base: str, side: str, suffix: str = "") -> str:
    key = f"{base}:{side}{suffix}"
    return key if t.get(key) is not None else f"{base}:both{suffix}"


def _curb(t: Any, side: str) -> tuple[bool, str | None]:
    """Whether this side has a parking curb, and its orientation."""
    new = _side(t, "parking", side)
    if new is not None:
        value = new.lower()
        if value in _NEW_CURB:
            orientation = (_side(t, "parking", side, ":orientation") or "").lower()
            return True, _OLD_CURB.get(orientation)
        if value not in _NEW_NONE:
            t.warn(_key(t, "parking", side), f"{_key(t, 'parking', side)}={new} is not understood; no spot on this side")
        return False, None
    old = _side(t, "parking:lane", side)
    if old is None:
        return False, None
    value = old.lower()
    if value in _OLD_CURB:
        return True, _OLD_CURB[value]
    if value not in _OLD_NONE:
        key = _key(t, "parking:lane", side)
        t.warn(key, f"{key}={old} is not understood; no spot on this side")
    return False, None


def split_conditional(value: str) -> list[tuple[str, str]]:
    """``"no_stopping @ (Mo-Fr 07:00-09:00); 2 hours @ wet"`` → ``[(value, condition), ...]``."""
    parts, depth, current = [], 0, ""
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == ";" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    out = []
    for part in parts:
        if "@" not in part:
            continue
        what, _, cond = part.partition("@")
        cond = cond.strip()
        if cond.startswith("(") and cond.endswith(")"):
            cond = cond[1:-1].strip()
        out.append((what.strip(), cond))
    return out


def _is_time(cond: str) -> bool:
    return opening_hours_error(cond) is None


def _condition_rule(t: Any, key: str, value: str, when: str | None, max_stay: float | None) -> Rule:
    values = [v.strip().lower() for v in value.split(";") if v.strip()]
    if any(v in _PUBLIC_CONDITIONS for v in values):
        return Rule(when, "parking", "public", max_stay, any(v in ("ticket", "fee") for v in values))
    activity, access = _CONDITION.get(values[0] if values else "", (None, None))
    if activity is None:
        t.warn(key, f"{key}={value} is not understood; treated as no parking")
        activity, access = "no_parking", "public"
    return Rule(when, activity, access, max_stay if activity == "parking" else None, False)


def _old_rules(t: Any, side: str) -> list[Rule] | None:
    base = "parking:condition"
    cond = _side(t, base, side)
    interval = _side(t, base, side, ":time_interval")
    default = _side(t, base, side, ":default")
    maxstay_key = _key(t, base, side, ":maxstay")
    if cond is None and interval is None and default is None and t.get(maxstay_key) is None:
        return None
    max_stay = t.unit(maxstay_key, units.parse_duration_min, "a duration such as '2 h' or '90 min'")
    when = None
    if interval is not None:
        key = _key(t, base, side, ":time_interval")
        problem = opening_hours_error(interval)
        if problem:
            t.error(key, f"{key} '{interval}' is not valid opening_hours syntax ({problem})")
        when = interval
    rules = [_condition_rule(t, _key(t, base, side), cond or "free", when, max_stay)]
    if when is not None:
        rules.append(_condition_rule(t, _key(t, base, side, ":default"), default or "free", None, None))
    return rules


def _new_rules(t: Any, side: str) -> list[Rule]:
    rules: list[Rule] = []
    for suffix in (":restriction:conditional", ":restriction"):
        key = _key(t, "parking", side, suffix)
        raw = _side(t, "parking", side, suffix)
        if raw is None:
            continue
        pairs = split_conditional(raw) if suffix.endswith("conditional") else [(raw, "")]
        for what, cond in pairs:
            activity, access = _RESTRICTION.get(what.lower(), (None, None))
            if activity is None:
                t.warn(key, f"{key}={raw}: restriction '{what}' is not understood; treated as no parking")
                activity, access = "no_parking", "public"
            if cond and not _is_time(cond):
                t.warn(key, f"{key}: condition '{cond}' is not a time; the restriction is applied at all times")
                cond = ""
            rules.append(Rule(cond or None, activity, access))
    access_tag = (_side(t, "parking", side, ":access") or "yes").lower()
    access = _ACCESS.get(access_tag, "private")
    fee_tag = _side(t, "parking", side, ":fee")
    fee = fee_tag is not None and fee_tag.lower() not in ("no", "free")
    stay_key = _key(t, "parking", side, ":maxstay")
    max_stay = t.unit(stay_key, units.parse_duration_min, "a duration such as '2 h' or '90 min'")
    fee_windows = split_conditional(_side(t, "parking", side, ":fee:conditional") or "")
    cond_key = _key(t, "parking", side, ":maxstay:conditional")
    for what, cond in split_conditional(_side(t, "parking", side, ":maxstay:conditional") or ""):
        try:
            stay = units.parse_duration_min(what)
        except units.UnitError:
            t.error(cond_key, f"{cond_key}: '{what}' is not a duration such as '2 h' or '90 min'")
            continue
        if not _is_time(cond):
            t.warn(cond_key, f"{cond_key}: condition '{cond}' is not a time; the maximum stay is applied at all times")
            cond = ""
        # Inside a maxstay window the fee may or may not apply: say "fee" rather than promise free parking.
        rules.append(Rule(cond or None, "parking", access, stay, fee or bool(fee_windows)))
    for what, cond in fee_windows:
        if _is_time(cond):
            rules.append(Rule(cond, "parking", access, max_stay, what.lower() not in ("no", "free")))
        else:
            t.warn(_key(t, "parking", side, ":fee:conditional"), f"fee condition '{cond}' is not a time; ignored")
    rules.append(Rule(None, "parking", access, max_stay, fee))
    return rules


def street_spots(t: Any, geom: Any, dataset: str | None, fid: str | None) -> tuple[Spot, ...]:
    """The curb spots of one road way (``t`` is the feature's TagReader)."""
    limits = t.limits()
    length = round(geometry_length_m(geom), 2)
    name = t.get("name")
    spots = []
    for side in SIDES:
        has_curb, orientation = _curb(t, side)
        if not has_curb:
            continue
        rules = _old_rules(t, side)
        if rules is None:
            rules = _new_rules(t, side)
        capacity_key = _key(t, "parking", side, ":capacity")
        if t.get(capacity_key) is None:
            capacity_key = _key(t, "parking:lane", side, ":capacity")
        capacity = t.unit(capacity_key, units.parse_count, "a whole number")
        spots.append(
            Spot(
                geometry=geom,
                kind="curb",
                orientation=orientation,
                length_m=length,
                capacity=capacity,
                rules=intern_rules(rules),
                name=f"{name} ({side} side)" if name else None,
                source_dataset=dataset,
                source_feature_id=f"{fid}:{side}" if fid else side,
                **limits,
            )
        )
    return () if t.failed else tuple(spots)
