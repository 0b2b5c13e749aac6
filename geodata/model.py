"""The normalized spot model every input format maps to (GEODATA.md).

Plain frozen dataclasses, no I/O. ``Spot.to_properties`` /
``Spot.from_properties`` convert to and from the normalized property names so
the service can store a spot as a GeoJSON feature and serve it back unchanged.
``from_properties`` trusts its input (it reads what ``to_properties`` wrote);
untrusted uploads go through :mod:`geodata.normalize`, which reports problems
per field instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

KINDS = ("curb", "space", "lot", "charger")
# What a point of interest (the ``pois`` layer) is, for the recipes that look for one (see normalize.py).
POI_CATEGORIES = ("workshop", "dealer", "charger", "fuel", "parking", "other")
ORIENTATIONS = ("parallel", "perpendicular", "diagonal")
ACTIVITIES = ("parking", "no_parking", "no_stopping", "loading")
ACCESS = ("public", "residents", "customers", "permit", "disabled", "private")

LIMIT_FIELDS = (
    "max_vehicle_length_m",
    "max_vehicle_width_m",
    "max_vehicle_height_m",
    "max_vehicle_weight_kg",
)


@dataclass(frozen=True, slots=True)
class Rate:
    """A price: ``amount`` in ``currency`` for every ``per_min`` minutes."""

    amount: float
    per_min: float | None = None
    currency: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The rate as the JSON object stored in a rule's ``rate``."""
        out: dict[str, Any] = {"amount": self.amount}
        if self.per_min is not None:
            out["per_min"] = self.per_min
        if self.currency is not None:
            out["currency"] = self.currency
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rate:
        """Inverse of :meth:`to_dict`."""
        per_min = data.get("per_min")
        return cls(
            amount=float(data["amount"]),
            per_min=None if per_min is None else float(per_min),
            currency=data.get("currency"),
        )

    def describe(self) -> str:
        """Human words, e.g. ``0.50 USD per 15 min``."""
        money = f"{self.amount:.2f}" + (f" {self.currency}" if self.currency else "")
        if self.per_min is None:
            return money
        if self.per_min == 60:
            return f"{money} per hour"
        return f"{money} per {self.per_min:g} min"


@dataclass(frozen=True, slots=True)
class Rule:
    """One entry of a spot's ordered rule list; the first whose ``when`` matches decides.

    ``when`` is an OSM ``opening_hours`` string, or ``None`` for always.
    """

    when: str | None
    activity: str
    access: str = "public"
    max_stay_min: float | None = None
    fee: bool = False
    rate: Rate | None = None

    @property
    def permits_public_parking(self) -> bool:
        """True when this rule, while it applies, lets anyone without a permit park."""
        return self.activity == "parking" and self.access == "public"

    def to_dict(self) -> dict[str, Any]:
        """The rule in the normalized JSON shape of GEODATA.md."""
        out: dict[str, Any] = {
            "when": self.when,
            "activity": self.activity,
            "access": self.access,
            "max_stay_min": self.max_stay_min,
            "fee": self.fee,
        }
        if self.rate is not None:
            out["rate"] = self.rate.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Inverse of :meth:`to_dict` (trusted input)."""
        rate = data.get("rate")
        max_stay = data.get("max_stay_min")
        return cls(
            when=data.get("when"),
            activity=data["activity"],
            access=data.get("access") or "public",
            max_stay_min=None if max_stay is None else float(max_stay),
            fee=bool(data.get("fee", False)),
            rate=Rate.from_dict(rate) if rate else None,
        )


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A vehicle's outer dimensions; ``None`` where unknown."""

    length_m: float
    width_m: float | None = None
    height_m: float | None = None
    weight_kg: float | None = None


@dataclass(frozen=True, slots=True, eq=False)
class Spot:
    """A place to park, in the normalized model.

    Equality is identity: two spots with the same fields are still two places.
    """

    geometry: BaseGeometry
    kind: str | None = None
    orientation: str | None = None
    length_m: float | None = None
    max_vehicle_length_m: float | None = None
    max_vehicle_width_m: float | None = None
    max_vehicle_height_m: float | None = None
    max_vehicle_weight_kg: float | None = None
    capacity: int | None = None
    rules: tuple[Rule, ...] = ()
    connectors: tuple[str, ...] = ()
    power_kw: float | None = None
    name: str | None = None
    operator: str | None = None
    source_dataset: str | None = None
    source_feature_id: str | None = None
    # Points of interest: one of POI_CATEGORIES, OSM opening_hours (when it is open), the brand it serves.
    category: str | None = None
    opening_hours: str | None = None
    brand: str | None = None

    def to_properties(self, rules: Any = None) -> dict[str, Any]:
        """Normalized properties (GEODATA.md names); ``None`` and empty values left out.

        ``rules``, when given, is written in place of the rule list (the importer
        puts a placeholder there and splices in the list's JSON, encoded once).
        """
        props: dict[str, Any] = {}
        for name in ("kind", "orientation", "length_m", *LIMIT_FIELDS, "capacity"):
            value = getattr(self, name)
            if value is not None:
                props[name] = value
        props["rules"] = [rule.to_dict() for rule in self.rules] if rules is None else rules
        if self.connectors:
            props["connectors"] = list(self.connectors)
        for name in ("power_kw", "name", "operator", "category", "opening_hours", "brand"):
            value = getattr(self, name)
            if value is not None:
                props[name] = value
        props["source"] = {"dataset": self.source_dataset, "feature_id": self.source_feature_id}
        return props

    def to_feature(self) -> dict[str, Any]:
        """A GeoJSON Feature with the normalized properties."""
        return {"type": "Feature", "geometry": mapping(self.geometry), "properties": self.to_properties()}

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any], geometry: BaseGeometry | Mapping[str, Any], *,
                        rules: tuple[Rule, ...] | None = None) -> Spot:
        """Rebuild a spot from what :meth:`to_properties` wrote (trusted input).

        ``geometry`` may be a shapely geometry or a GeoJSON geometry mapping. ``rules``, when
        given, are ``properties["rules"]`` already parsed (a reader of many spots shares them).
        """
        geom = geometry if isinstance(geometry, BaseGeometry) else shape(geometry)
        source = properties.get("source") or {}
        capacity = properties.get("capacity")
        kwargs: dict[str, Any] = {}
        for name in ("length_m", *LIMIT_FIELDS, "power_kw"):
            value = properties.get(name)
            kwargs[name] = None if value is None else float(value)
        return cls(
            geometry=geom,
            kind=properties.get("kind"),
            orientation=properties.get("orientation"),
            capacity=None if capacity is None else int(capacity),
            rules=rules if rules is not None else tuple(Rule.from_dict(r) for r in properties.get("rules") or ()),
            connectors=tuple(properties.get("connectors") or ()),
            name=properties.get("name"),
            operator=properties.get("operator"),
            source_dataset=source.get("dataset"),
            source_feature_id=source.get("feature_id"),
            category=properties.get("category"),
            opening_hours=properties.get("opening_hours"),
            brand=properties.get("brand"),
            **kwargs,
        )

    @classmethod
    def from_feature(cls, feature: Mapping[str, Any]) -> Spot:
        """Rebuild a spot from :meth:`to_feature` output."""
        return cls.from_properties(feature.get("properties") or {}, feature["geometry"])
