"""CurbLR 1.x feeds: each feature's regulations become one curb spot's ordered rules.

Streaming: the manifest (time zone, currency, priority hierarchy, units) is
needed before the first feature can be converted. It comes first in every
feed we know, so a first pass reads only until the manifest ends (a few KiB),
then the stream is rewound and features are read one at a time. A manifest
after the features costs a second full pass, still in bounded memory; a
non-seekable stream is first spooled to a temporary file.

Mapping: regulations ranked by ``manifest.priorityHierarchy`` (rule
``priorityCategory``, else its activity); ``parking`` → parking, ``no
parking`` / ``standing`` / ``no loading`` → no_parking (standing lets a
driver stop, not park), ``no standing`` → no_stopping, ``loading`` → loading;
``maxStay`` → max_stay_min; user classes other than general ones make access
non-public, their ``maxLength``/``maxHeight``/``maxWeight`` on a parking
regulation become the spot's legal limits; ``timeSpans`` → opening_hours
(holidays → ``PH``); ``payment`` → fee and rate; ``location.baysAngle`` →
orientation; ``manifest.timeZone`` → the dataset time zone.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, BinaryIO, Iterator, Mapping

from geodata import units
from geodata.model import Rate, Rule, Spot
from geodata.normalize import default_length_m, intern_rules
from geodata.readers import FeatureResult, Reader
from geodata.readers import _timespans as ts
from geodata.readers._json import first_item, iter_items
from geodata.validate import ERROR, WARNING, FormatError, Issue

ACTIVITY = {
    "parking": "parking",
    "no parking": "no_parking",
    "standing": "no_parking",
    "no loading": "no_parking",
    "no standing": "no_stopping",
    "no stopping": "no_stopping",
    "loading": "loading",
}
GENERAL_CLASSES = {"", "all", "any", "everyone", "general", "public", "car", "cars", "vehicle", "vehicles",
                   "passenger vehicle", "passenger vehicles"}
_ORIENTATION = {"parallel": "parallel", "perpendicular": "perpendicular", "diagonal": "diagonal", "angled": "diagonal"}
_LENGTH_UNIT = {"feet": "ft", "foot": "ft", "ft": "ft", "metres": "m", "meters": "m", "metre": "m", "meter": "m", "m": "m"}
_WEIGHT_KG = {"tons": units.SHORT_TON_KG, "ton": units.SHORT_TON_KG, "tonnes": 1000.0, "tonne": 1000.0,
              "t": 1000.0, "pounds": units.POUND_KG, "lbs": units.POUND_KG, "kilograms": 1.0, "kg": 1.0}


def class_access(name: str) -> str:
    """The normalized access for a user class that is not a general one."""
    name = name.lower()
    if "resident" in name:
        return "residents"
    if "permit" in name:
        return "permit"
    if name in ("handicap", "disabled", "handicap-accessible", "accessible"):
        return "disabled"
    if name in ("customer", "customers", "hotel_guest", "hotel guest", "visitor", "patron", "patrons"):
        return "customers"
    return "private"


def seekable(fp: BinaryIO) -> BinaryIO:
    """``fp`` itself when it can seek, else a temporary file holding its content."""
    if fp.seekable():
        return fp
    spool = tempfile.TemporaryFile()
    shutil.copyfileobj(fp, spool, 1 << 20)
    spool.seek(0)
    return spool


class CurbLRReader(Reader):
    """Reads CurbLR 1.x."""

    format = "curblr"

    def _read(self) -> Iterator[FeatureResult]:
        stream = self.stream = seekable(self.fp)
        start = stream.tell()
        manifest = first_item(stream, "manifest")
        if not isinstance(manifest, dict):
            raise FormatError("not a CurbLR feed: it has no manifest object")
        self._use_manifest(manifest)
        stream.seek(start)
        for index, (_, feature) in enumerate(iter_items(stream, ["features.item"])):
            yield self.convert(index, feature)

    def _use_manifest(self, manifest: Mapping[str, Any]) -> None:
        self.metadata = dict(manifest)
        self.timezone = manifest.get("timeZone") or self.options.timezone
        self.currency = manifest.get("currency")
        self.hierarchy = [str(h).strip().lower() for h in manifest.get("priorityHierarchy") or []]
        self.length_unit = _LENGTH_UNIT.get(str(manifest.get("unitHeightLength") or "").lower())
        self.weight_kg = _WEIGHT_KG.get(str(manifest.get("unitWeight") or "").lower())

    def _rank(self, regulation: Mapping[str, Any]) -> float:
        rule = regulation.get("rule") or {}
        category = rule.get("priorityCategory")
        if isinstance(category, (int, float)) and not isinstance(category, bool):
            return float(category)
        for name in (category, rule.get("activity")):
            if isinstance(name, str) and name.strip().lower() in self.hierarchy:
                return float(self.hierarchy.index(name.strip().lower()))
        return float(len(self.hierarchy))

    def convert(self, index: int, feature: Any) -> FeatureResult:
        """One CurbLR feature → one curb spot (or issues)."""
        if not isinstance(feature, dict) or not isinstance(feature.get("properties"), dict):
            return FeatureResult(index, None, (), (Issue(index, "properties", "this item is not a CurbLR feature"),))
        props = feature["properties"]
        location = props.get("location") if isinstance(props.get("location"), dict) else {}
        fid = str(feature.get("id") or location.get("objectId") or index)
        issues: list[Issue] = []
        if self.too_deep(props, fid, "properties", issues):
            return FeatureResult(index, fid, (), tuple(issues))
        geom = self.geometry(feature.get("geometry"), fid, issues)
        regulations = props.get("regulations")
        if not isinstance(regulations, list):
            issues.append(Issue(fid, "regulations", "regulations must be a list", ERROR))
        if geom is None or not isinstance(regulations, list):
            return FeatureResult(index, fid, (), tuple(issues))
        rules: list[Rule] = []
        limits: dict[str, float] = {}
        ranked = sorted((r for r in regulations if isinstance(r, dict)), key=self._rank)
        for n, regulation in enumerate(ranked):
            rule = self._regulation(regulation, fid, f"regulations[{n}]", issues, limits)
            if rule is not None:
                rules.append(rule)
        if any(i.level == ERROR for i in issues):
            return FeatureResult(index, fid, (), tuple(issues))
        bays = location.get("baysCount")
        spot = Spot(
            geometry=geom,
            kind="curb",
            orientation=_ORIENTATION.get(str(location.get("baysAngle") or "").lower()),
            length_m=default_length_m(geom, "curb", None),
            capacity=int(bays) if isinstance(bays, (int, float)) and not isinstance(bays, bool) else None,
            rules=intern_rules(rules),
            name=location.get("streetName") or None,
            source_dataset=self.options.dataset,
            source_feature_id=fid,
            **limits,
        )
        return FeatureResult(index, fid, (spot,), tuple(issues))

    def _regulation(
        self, regulation: Mapping[str, Any], fid: str, field: str, issues: list[Issue], limits: dict[str, float]
    ) -> Rule | None:
        rule = regulation.get("rule") if isinstance(regulation.get("rule"), dict) else {}
        raw = str(rule.get("activity") or "").strip().lower()
        activity = ACTIVITY.get(raw)
        if activity is None:
            issues.append(Issue(fid, f"{field}.rule.activity", f"activity '{raw}' is not known; treated as no parking", WARNING))
            activity = "no_parking"
        restrictive = activity != "parking"
        access = self._access(regulation.get("userClasses"), fid, field, issues, limits if not restrictive else None)
        max_stay = None
        if rule.get("maxStay") is not None:
            try:
                max_stay = units.parse_duration_min(rule["maxStay"])
            except units.UnitError as exc:
                issues.append(Issue(fid, f"{field}.rule.maxStay", f"maxStay {exc}", ERROR))
        when, keep = self._when(regulation.get("timeSpans"), restrictive, fid, field, issues)
        if not keep:
            return None
        fee, rate = self._payment(rule, regulation.get("payment"))
        return Rule(when, activity, access, max_stay if activity == "parking" else None, fee, rate)

    def _access(
        self, user_classes: Any, fid: str, field: str, issues: list[Issue], limits: dict[str, float] | None
    ) -> str:
        if not isinstance(user_classes, list) or not user_classes:
            return "public"
        general, special = False, []
        for uc in user_classes:
            if not isinstance(uc, dict):
                continue
            classes = [str(c).strip().lower() for c in uc.get("classes") or []]
            special.extend(c for c in classes if c not in GENERAL_CLASSES)
            if all(c in GENERAL_CLASSES for c in classes):
                general = True
            if any(uc.get(k) is not None for k in ("minLength", "minHeight", "minWeight")):
                special.append("large vehicles")
            if limits is not None:
                self._limits(uc, fid, f"{field}.userClasses", issues, limits)
        if general and not special:
            return "public"
        return class_access(special[0]) if special else "public"

    def _limits(self, uc: Mapping[str, Any], fid: str, field: str, issues: list[Issue], limits: dict[str, float]) -> None:
        for key, name in (("maxLength", "max_vehicle_length_m"), ("maxHeight", "max_vehicle_height_m"),
                          ("maxWeight", "max_vehicle_weight_kg")):
            value = uc.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                issues.append(Issue(fid, f"{field}.{key}", f"{key} '{value}' is not a positive number", ERROR))
                continue
            if name.endswith("_kg"):
                factor = self.weight_kg
                if factor is None:
                    factor = 1000.0
                    issues.append(Issue(fid, f"{field}.{key}", "the manifest has no unitWeight; read as tonnes", WARNING))
            else:
                unit = self.length_unit
                if unit is None:
                    unit = "m"
                    issues.append(Issue(fid, f"{field}.{key}", "the manifest has no unitHeightLength; read as metres", WARNING))
                factor = units.FOOT_M if unit == "ft" else 1.0
            converted = float(value) * factor
            limits[name] = min(limits.get(name, converted), converted)

    def _when(
        self, spans: Any, restrictive: bool, fid: str, field: str, issues: list[Issue]
    ) -> tuple[str | None, bool]:
        """The rule window, and whether to keep the rule at all."""
        if not isinstance(spans, list) or not spans:
            return None, True
        exprs: list[str | None] = []
        holidays_except = []
        for n, span in enumerate(spans):
            where = f"{field}.timeSpans[{n}]"
            try:
                expr, except_holidays = self._span(span if isinstance(span, dict) else {}, restrictive)
            except ts.Unsupported as exc:
                what = "applied at all times" if restrictive else "ignored (never applies)"
                issues.append(Issue(fid, where, f"{exc}; this restriction is {what}", WARNING))
                if restrictive:
                    return None, True
                continue
            exprs.append(expr)
            holidays_except.append(except_holidays)
        if not exprs:
            return None, False
        return ts.combine(exprs, bool(holidays_except) and all(holidays_except)), True

    def _span(self, span: Mapping[str, Any], restrictive: bool) -> tuple[str | None, bool]:
        except_holidays, only_holidays = False, False
        for period in span.get("designatedPeriods") or []:
            name = str(period.get("name") or "").strip().lower()
            apply = str(period.get("apply") or "").strip().lower().replace("_", " ")
            if name in ("holiday", "holidays", "public holidays"):
                if apply.startswith("except"):
                    except_holidays = True
                else:
                    only_holidays = True
            else:
                raise ts.Unsupported(f"designated period '{name}' ({apply}) cannot be evaluated")
        times = ts.times_of_day(
            (t.get("from"), t.get("to", t.get("until"))) for t in span.get("timesOfDay") or [] if isinstance(t, dict)
        ) or None
        if only_holidays:
            return ts.span("PH", times), False
        dates = ",".join(ts.date_range(d.get("from"), d.get("to", d.get("until")))
                         for d in span.get("effectiveDates") or [] if isinstance(d, dict)) or None
        week = span.get("daysOfWeek") if isinstance(span.get("daysOfWeek"), dict) else {}
        occurrences = week.get("occurrencesInMonth") or week.get("occurrences_in_month") or ()
        days = ts.weekdays(week.get("days") or (), occurrences) or None
        month_days = span.get("daysOfMonth")
        if month_days:
            if dates:
                raise ts.Unsupported("days of the month together with effective dates")
            dates = ts.month_days(month_days)
        return ts.span(dates, days, times), except_holidays

    def _payment(self, rule: Mapping[str, Any], payment: Any) -> tuple[bool, Rate | None]:
        fee = bool(rule.get("payment"))
        rate = None
        if isinstance(payment, dict):
            for entry in payment.get("rates") or []:
                if not isinstance(entry, dict):
                    continue
                fees, durations = entry.get("fees") or [], entry.get("durations") or []
                if fees and isinstance(fees[0], (int, float)):
                    fee = fee or fees[0] > 0
                    per = durations[0] if durations and isinstance(durations[0], (int, float)) else None
                    rate = rate or Rate(float(fees[0]), None if per is None else float(per), self.currency)
        return fee, rate
