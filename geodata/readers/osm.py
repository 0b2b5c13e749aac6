"""OSM data as GeoJSON with tags as properties (what ``osmium export`` writes).

- ``amenity=parking`` → ``lot``; ``amenity=parking_space`` → ``space``;
  ``amenity=charging_station`` → ``charger`` with ``socket:*`` connectors.
  ``opening_hours`` becomes the window of the parking rule (closed: no rule,
  so not allowed); ``access``, ``fee``, ``maxstay``, ``capacity`` and the
  ``max*`` legal limits are read too.
- Road ways with street parking (``parking:lane:*`` old scheme,
  ``parking:{side}`` new scheme) → one ``curb`` per side; see
  :mod:`geodata.readers.osm_street`.
- Points of interest (for the ``pois`` layer): ``shop=car_repair`` →
  category ``workshop``, ``shop=car`` → ``dealer`` (a place with no kind and
  no parking rules), ``amenity=charging_station`` → also category
  ``charger``; ``name``, ``operator``, ``brand`` and ``opening_hours`` are
  kept (opening hours that cannot be read are dropped with a warning).
- Anything else is not about parking and gives no spot and no issue.

Feature ids: osmium's ``type_id`` (``w123``) or ``@type``/``@id`` attributes
become ``way/123``.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from geodata import units
from geodata.model import Rule, Spot
from geodata.normalize import default_length_m, intern_rules
from geodata.readers import FeatureResult, Reader
from geodata.readers.geojson import iter_features
from geodata.readers.osm_street import street_spots, tags_for_street
from geodata.validate import ERROR, WARNING, Issue, opening_hours_error

_OSM_TYPES = {"n": "node", "w": "way", "r": "relation", "a": "area"}
_ACCESS = {
    "yes": "public", "public": "public", "permissive": "public", "designated": "public",
    "private": "private", "no": "private", "permit": "permit", "customers": "customers",
    "destination": "customers", "residents": "residents", "disabled": "disabled", "delivery": "private",
}
_SPACE_ACCESS = {"disabled": "disabled", "residents": "residents", "private": "private", "customers": "customers"}
_ORIENTATION = {"parallel": "parallel", "perpendicular": "perpendicular", "diagonal": "diagonal"}
_SHOP_CATEGORY = {"car_repair": "workshop", "car": "dealer"}


def osm_id(feature: Mapping[str, Any], props: Mapping[str, Any]) -> str | None:
    """``way/123`` style id from osmium's unique id or its ``@type``/``@id`` attributes."""
    fid = feature.get("id")
    if isinstance(fid, str) and len(fid) > 1 and fid[0] in _OSM_TYPES and fid[1:].lstrip("-").isdigit():
        return f"{_OSM_TYPES[fid[0]]}/{fid[1:]}"
    if props.get("@type") and props.get("@id") is not None:
        return f"{props['@type']}/{props['@id']}"
    return None if fid in (None, "") else str(fid)


class TagReader:
    """Reads typed values from one feature's tags, collecting issues with the tag name."""

    def __init__(self, tags: Mapping[str, Any], feature: int | str) -> None:
        self.tags = tags
        self.feature = feature
        self.issues: list[Issue] = []

    def error(self, key: str, message: str) -> None:
        self.issues.append(Issue(self.feature, key, message, ERROR))

    def warn(self, key: str, message: str) -> None:
        self.issues.append(Issue(self.feature, key, message, WARNING, "ignored"))

    @property
    def failed(self) -> bool:
        return any(i.level == ERROR for i in self.issues)

    def get(self, key: str) -> str | None:
        value = self.tags.get(key)
        return None if value in (None, "") else str(value).strip()

    def unit(self, key: str, parser: Any, what: str | None = None) -> Any:
        value = self.get(key)
        if value is None:
            return None
        if value.lower() == "below_default":
            self.warn(key, f"{key}=below_default gives no number; the limit was ignored")
            return None
        try:
            return parser(value)
        except units.UnitError:
            self.error(key, f"{key} '{value}' is not {what or 'a number'}")
            return None

    def limits(self) -> dict[str, float | None]:
        """Legal limits from maxlength/maxwidth/maxheight/maxweight."""
        metres = "a number in metres"
        return {
            "max_vehicle_length_m": self.unit("maxlength", units.parse_length_m, metres),
            "max_vehicle_width_m": self.unit("maxwidth", units.parse_length_m, metres),
            "max_vehicle_height_m": self.unit("maxheight", units.parse_length_m, metres),
            "max_vehicle_weight_kg": self.unit("maxweight", units.parse_weight_kg, "a weight in tonnes"),
        }

    def opening_hours(self, key: str = "opening_hours") -> str | None:
        value = self.get(key)
        if value is None or value == "24/7":
            return None
        problem = opening_hours_error(value)
        if problem:
            self.error(key, f"{key} '{value}' is not valid opening_hours syntax ({problem})")
            return None
        return value


def _connectors(tags: Mapping[str, Any]) -> tuple[str, ...]:
    found = []
    for key, value in tags.items():
        if not key.startswith("socket:") or key.count(":") != 1:
            continue
        text = str(value).strip().lower()
        if text in ("no", "0", ""):
            continue
        found.append(key.split(":", 1)[1])
    return tuple(sorted(found))


def _power_kw(t: TagReader) -> float | None:
    best = None
    for key in t.tags:
        if key == "charging_station:output" or (key.startswith("socket:") and key.endswith(":output")):
            value = t.unit(key, units.parse_power_kw, "a power in kW")
            if value is not None:
                best = value if best is None else max(best, value)
    return best


def _place_spot(t: TagReader, geom: Any, amenity: str, dataset: str | None, fid: str | None) -> Spot | None:
    """A lot, space or charger from its tags."""
    kind = {"parking": "lot", "parking_space": "space", "charging_station": "charger"}[amenity]
    access_tag = (t.get("access") or "yes").lower()
    access = _ACCESS.get(access_tag)
    if access is None:
        t.warn("access", f"access={access_tag} is not understood; treated as private")
        access = "private"
    if kind == "space":
        access = _SPACE_ACCESS.get((t.get("parking_space") or "").lower(), access)
    fee = False
    fee_tag = t.get("fee") or t.get("parking:fee")
    if fee_tag is not None:
        try:
            fee = units.parse_bool(fee_tag)
        except units.UnitError:
            fee = True  # e.g. "fee=2 EUR/h": it costs something
    max_stay = t.unit("maxstay", units.parse_duration_min, "a duration such as '2 h' or '90 min'")
    when = t.opening_hours()
    capacity = t.unit("capacity", units.parse_count, "a whole number")
    limits = t.limits()
    length = t.unit("length", units.parse_length_m, "a number in metres") if kind == "space" else None
    power = _power_kw(t) if kind == "charger" else None
    if t.failed:
        return None
    orientation = _ORIENTATION.get((t.get("orientation") or t.get("parking_space:orientation") or "").lower())
    return Spot(
        geometry=geom,
        kind=kind,
        orientation=orientation,
        length_m=default_length_m(geom, kind, length),
        capacity=capacity,
        rules=intern_rules([Rule(when, "parking", access, max_stay, fee)]),
        connectors=_connectors(t.tags) if kind == "charger" else (),
        power_kw=power,
        name=t.get("name"),
        operator=t.get("operator"),
        source_dataset=dataset,
        source_feature_id=fid,
        category="charger" if kind == "charger" else None,
        opening_hours=_charger_hours(t, when) if kind == "charger" else None,
        brand=t.get("brand") if kind == "charger" else None,
        **limits,
    )


def _charger_hours(t: TagReader, when: str | None) -> str | None:
    """A charger's opening hours as a place (its parking rule already has them as its window)."""
    return "24/7" if when is None and (t.get("opening_hours") or "").lower() == "24/7" else when


def _shop_place(t: TagReader, geom: Any, category: str, dataset: str | None, fid: str | None) -> Spot:
    """A workshop or a dealer: where it is, what it is called, when it is open."""
    hours = t.get("opening_hours")
    if hours is not None and opening_hours_error(hours):
        t.warn("opening_hours", f"opening_hours '{hours}' is not valid opening_hours syntax; ignored")
        hours = None
    return Spot(geometry=geom, kind=None, name=t.get("name"), operator=t.get("operator"), source_dataset=dataset,
                source_feature_id=fid, category=category, opening_hours=hours, brand=t.get("brand"))


class OSMReader(Reader):
    """Reads OSM GeoJSON (osmium export)."""

    format = "osm"

    def _read(self) -> Iterator[FeatureResult]:
        for index, feature in iter_features(self.fp, self.head):
            yield self.convert(index, feature)

    def convert(self, index: int, feature: Any) -> FeatureResult:
        """One OSM feature → zero, one or two spots."""
        if not isinstance(feature, dict) or not isinstance(feature.get("properties") or {}, dict):
            return FeatureResult(index, None, (), (Issue(index, "type", "this item is not a GeoJSON Feature"),))
        tags = feature.get("properties") or {}
        fid = osm_id(feature, tags)
        label: int | str = fid if fid is not None else index
        amenity = str(tags.get("amenity") or "")
        shop = _SHOP_CATEGORY.get(str(tags.get("shop") or ""))
        street = tags_for_street(tags)
        if amenity not in ("parking", "parking_space", "charging_station") and not street and shop is None:
            return FeatureResult(index, fid, ())
        issues: list[Issue] = []
        if self.too_deep(tags, label, "properties", issues):
            return FeatureResult(index, fid, (), tuple(issues))
        geom = self.geometry(feature.get("geometry"), label, issues, allow_multi=True)
        if geom is None:
            return FeatureResult(index, fid, (), tuple(issues))
        t = TagReader(tags, label)
        dataset = self.options.dataset
        if amenity in ("parking", "parking_space", "charging_station"):
            spot = _place_spot(t, geom, amenity, dataset, fid)
            spots: tuple[Spot, ...] = (spot,) if spot else ()
        elif shop is not None:
            spots = (_shop_place(t, geom, shop, dataset, fid),)
        elif geom.geom_type != "LineString":
            t.warn("geometry", "street parking tags on a feature that is not a line; ignored")
            spots = ()
        else:
            spots = street_spots(t, geom, dataset, fid)
        return FeatureResult(index, fid, spots, tuple(issues + t.issues))
