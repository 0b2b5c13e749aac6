"""CDS Curbs API 1.x: zones and spaces with the policies that regulate them.

Accepted documents: a Curbs API response (``{"version", "time_zone",
"currency", "data": {"zones": [...], "spaces": [...], "policies": [...]}}``,
``data`` also as a list of such objects) or the same arrays at the top level.

Streaming: zones and spaces refer to policies by id, and policies may come
after them. A first pass therefore collects the header, every policy and,
per zone, its policy ids and parking angle (what spaces inherit) — small next
to the geometry. A second pass streams zones and spaces one at a time. A
non-seekable stream is spooled to a temporary file first.

Mapping: policies ordered by ``priority`` (lowest first); per policy the rule
that applies to everyone (no ``user_classes``, or only general ones) is used,
else its first rule with non-public access; activities ``parking`` →
parking, ``no parking`` / ``stopping`` / ``no loading`` / ``no unloading``
→ no_parking, ``loading`` / ``unloading`` → loading, ``no stopping`` /
``travel`` → no_stopping (``no travel`` decides nothing and is skipped);
``max_stay`` (+ unit) → minutes; ``rate`` → fee and rate; time spans →
opening_hours in the header's ``time_zone``. Zone ``length`` /
``available_space_lengths`` (the longest gap wins) and space ``length`` are
centimetres; ``width`` → the widest vehicle that fits.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping

import shapely

from geodata.allowed import zone as tz_zone
from geodata.geo import distance_m, geometry_length_m
from geodata.model import Rate, Rule, Spot
from geodata.normalize import intern_rules
from geodata.readers import FeatureResult, Reader
from geodata.readers import _timespans as ts
from geodata.readers._json import iter_items
from geodata.readers.curblr import GENERAL_CLASSES, class_access, seekable
from geodata.validate import ERROR, WARNING, Issue

_ROOTS = ("data.", "data.item.", "")
_ACTIVITY = {
    "parking": "parking", "no parking": "no_parking", "stopping": "no_parking", "no loading": "no_parking",
    "no unloading": "no_parking", "loading": "loading", "unloading": "loading", "no stopping": "no_stopping",
    "travel": "no_stopping", "no travel": None,
}
_UNIT_MIN = {"second": 1 / 60, "minute": 1.0, "hour": 60.0, "day": 1440.0, "week": 10080.0,
             "month": 43200.0, "quarter": 129600.0, "year": 525600.0}
_ANGLE = {"parallel": "parallel", "perpendicular": "perpendicular", "angled": "diagonal", "diagonal": "diagonal"}


def _prefixes(name: str) -> list[str]:
    return [f"{root}{name}.item" for root in _ROOTS]


def _cm(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value) / 100.0


def _polygon_length_m(geom: Any) -> float:
    """The long side of a curb zone polygon's minimum rotated rectangle, in geodesic metres."""
    rect = shapely.minimum_rotated_rectangle(geom)
    coords = list(rect.exterior.coords) if rect.geom_type == "Polygon" else list(rect.coords)
    sides = [distance_m(a[1], a[0], b[1], b[0]) for a, b in zip(coords, coords[1:])]
    return max(sides) if sides else 0.0


class CDSReader(Reader):
    """Reads CDS Curbs 1.x zones and spaces."""

    format = "cds"

    def _read(self) -> Iterator[FeatureResult]:
        stream = self.stream = seekable(self.fp)
        start = stream.tell()
        self.policies: dict[str, Mapping[str, Any]] = {}
        self.zones: dict[str, tuple[tuple[str, ...], str | None]] = {}
        meta = ["time_zone", "currency", "version"]
        for prefix, item in iter_items(stream, meta + _prefixes("policies") + _prefixes("zones")):
            if prefix in meta:
                self.metadata[prefix] = item
            elif prefix.endswith("policies.item") and isinstance(item, dict) and item.get("curb_policy_id"):
                self.policies[str(item["curb_policy_id"])] = item
            elif prefix.endswith("zones.item") and isinstance(item, dict) and item.get("curb_zone_id"):
                ids = tuple(str(p) for p in item.get("curb_policy_ids") or ())
                self.zones[str(item["curb_zone_id"])] = (ids, _ANGLE.get(str(item.get("parking_angle") or "")))
        self.timezone = self.metadata.get("time_zone") or self.options.timezone or "UTC"
        self.currency = self.metadata.get("currency")
        self._rule_cache: dict[tuple[str, ...], tuple[tuple[Rule, ...], tuple[str, ...]]] = {}
        stream.seek(start)
        index = 0
        for prefix, item in iter_items(stream, _prefixes("zones") + _prefixes("spaces")):
            yield self.convert(index, item, space=prefix.endswith("spaces.item"))
            index += 1

    def convert(self, index: int, item: Any, *, space: bool) -> FeatureResult:
        """One zone or space → one spot."""
        what = "space" if space else "zone"
        if not isinstance(item, dict):
            return FeatureResult(index, None, (), (Issue(index, what, f"this {what} is not a JSON object"),))
        fid = str(item.get("curb_space_id" if space else "curb_zone_id") or index)
        issues: list[Issue] = []
        if self.too_deep(item, fid, what, issues):
            return FeatureResult(index, fid, (), tuple(issues))
        raw_geom = item.get("geometry")
        if isinstance(raw_geom, dict) and raw_geom.get("type") == "Feature":
            raw_geom = raw_geom.get("geometry")
        geom = self.geometry(raw_geom, fid, issues)
        if geom is None:
            return FeatureResult(index, fid, (), tuple(issues))
        if space:
            zone_id = str(item.get("curb_zone_id") or "")
            if zone_id not in self.zones:
                issues.append(Issue(fid, "curb_zone_id", f"the space's zone '{zone_id}' is not in the file", ERROR))
                return FeatureResult(index, fid, (), tuple(issues))
            policy_ids, orientation = self.zones[zone_id]
            length = _cm(item.get("length"))
            kind = "space"
        else:
            policy_ids = tuple(str(p) for p in item.get("curb_policy_ids") or ())
            orientation = _ANGLE.get(str(item.get("parking_angle") or ""))
            gaps = [g for g in (_cm(v) for v in item.get("available_space_lengths") or ()) if g]
            length = max(gaps) if gaps else _cm(item.get("length"))
            if length is None:
                length = geometry_length_m(geom) if geom.geom_type == "LineString" else _polygon_length_m(geom)
                length = round(length, 2)
            kind = "curb"
        rules, problems = self._rules(policy_ids)
        issues.extend(Issue(fid, "curb_policy_ids", p, WARNING) for p in problems)
        missing = [p for p in policy_ids if p not in self.policies]
        if missing:
            issues.append(Issue(fid, "curb_policy_ids", f"policy '{missing[0]}' is not in the file", ERROR))
            return FeatureResult(index, fid, (), tuple(issues))
        capacity = item.get("num_spaces")
        spot = Spot(
            geometry=geom,
            kind=kind,
            orientation=orientation,
            length_m=length,
            max_vehicle_width_m=_cm(item.get("width")),
            capacity=capacity if isinstance(capacity, int) and not isinstance(capacity, bool) else None,
            rules=rules,
            name=item.get("name") or item.get("street_name") or None,
            source_dataset=self.options.dataset,
            source_feature_id=fid,
        )
        return FeatureResult(index, fid, (spot,), tuple(issues))

    def _rules(self, policy_ids: tuple[str, ...]) -> tuple[tuple[Rule, ...], tuple[str, ...]]:
        cached = self._rule_cache.get(policy_ids)
        if cached is None:
            policies = sorted((self.policies[p] for p in policy_ids if p in self.policies),
                              key=lambda p: p.get("priority") if isinstance(p.get("priority"), (int, float)) else math.inf)
            rules, problems = [], []
            for policy in policies:
                rule = self._policy_rule(policy, problems)
                if rule is not None:
                    rules.append(rule)
            if not policy_ids:
                problems.append("the zone has no policies: nobody may park there, so it is never offered")
            cached = self._rule_cache[policy_ids] = (intern_rules(rules), tuple(problems))
        return cached

    def _policy_rule(self, policy: Mapping[str, Any], problems: list[str]) -> Rule | None:
        pid = policy.get("curb_policy_id")
        candidates = [r for r in policy.get("rules") or [] if isinstance(r, dict)]
        if not candidates:
            return None
        chosen = next((r for r in candidates if all(str(c).lower() in GENERAL_CLASSES for c in r.get("user_classes") or [])),
                      candidates[0])
        classes = [str(c).lower() for c in chosen.get("user_classes") or [] if str(c).lower() not in GENERAL_CLASSES]
        access = class_access(classes[0]) if classes else "public"
        if policy.get("data_source_operator_id"):
            access = "private"
        raw = str(chosen.get("activity") or "").strip().lower()
        if raw not in _ACTIVITY:
            problems.append(f"policy {pid}: activity '{raw}' is not known; treated as no parking")
        activity = _ACTIVITY.get(raw, "no_parking")
        if activity is None:
            return None
        restrictive = activity != "parking"
        max_stay = None
        if isinstance(chosen.get("max_stay"), (int, float)) and chosen["max_stay"] > 0:
            max_stay = chosen["max_stay"] * _UNIT_MIN.get(str(chosen.get("max_stay_unit") or "minute"), 1.0)
        fee, rate = False, None
        for entry in chosen.get("rate") or []:
            if isinstance(entry, dict) and isinstance(entry.get("rate"), (int, float)):
                fee = fee or entry["rate"] > 0
                if rate is None and not entry.get("start_duration"):
                    per = _UNIT_MIN.get(str(entry.get("rate_unit") or "hour"), 60.0)
                    rate = Rate(entry["rate"] / 100.0, per, self.currency)
        spans = [s for s in policy.get("time_spans") or [] if isinstance(s, dict)]
        exprs, excepts = [], []
        for span in spans:
            try:
                expr, except_holidays = self._span(span)
            except ts.Unsupported as exc:
                what = "applied at all times" if restrictive else "ignored"
                problems.append(f"policy {pid}: {exc}; the policy is {what}")
                if restrictive:
                    exprs, excepts, spans = [], [], []
                    break
                continue
            exprs.append(expr)
            excepts.append(except_holidays)
        if spans and not exprs:
            return None
        when = ts.combine(exprs, bool(excepts) and all(excepts)) if exprs else None
        return Rule(when, activity, access, max_stay if not restrictive else None, fee, rate)

    def _date(self, millis: Any, *, end: bool) -> str:
        if isinstance(millis, bool) or not isinstance(millis, (int, float)):
            raise ts.Unsupported(f"timestamp '{millis}' is not milliseconds since 1970")
        local = datetime.fromtimestamp(millis / 1000.0, tz_zone(self.timezone))
        if end and local.time() == datetime.min.time():
            local -= timedelta(days=1)  # an exclusive end at midnight ends the day before
        return local.strftime("%Y-%m-%d")

    def _span(self, span: Mapping[str, Any]) -> tuple[str | None, bool]:
        period = str(span.get("designated_period") or "").strip().lower()
        except_holidays = False
        if period:
            if period not in ("holidays", "holiday"):
                raise ts.Unsupported(f"designated period '{period}' cannot be evaluated")
            if not span.get("designated_period_except"):
                start, stop = span.get("time_of_day_start"), span.get("time_of_day_end")
                times = ts.times_of_day([(start, stop)]) if start or stop else None
                return ts.span("PH", times), False
            except_holidays = True
        dates = None
        if span.get("start_date") is not None or span.get("end_date") is not None:
            first = self._date(span["start_date"], end=False) if span.get("start_date") is not None else "1970-01-01"
            last = self._date(span["end_date"], end=True) if span.get("end_date") is not None else "9999-12-31"
            dates = ts.date_range(first, last)
        months = span.get("months") or []
        month_days = span.get("days_of_month") or []
        if (months or month_days) and dates:
            raise ts.Unsupported("months or days of the month together with start/end dates")
        if month_days:
            dates = ts.month_days(month_days, months)
        elif months:
            dates = ts.month_list(months)
        days = ts.weekdays(span.get("days_of_week") or ()) or None
        start, stop = span.get("time_of_day_start"), span.get("time_of_day_end")
        times = ts.times_of_day([(start, stop)]) if start or stop else None
        return ts.span(dates, days, times), except_holidays
