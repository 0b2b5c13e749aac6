"""GeoJSON (RFC 7946) response schemas and OGC API-style links."""

from __future__ import annotations

import marshmallow as ma

GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")


class GeometrySchema(ma.Schema):
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(GEOMETRY_TYPES))
    coordinates = ma.fields.Raw(
        required=True,
        metadata={"type": "array", "items": {}, "description": "[lon, lat] positions (WGS 84), nested per type"},
    )


class FeatureSchema(ma.Schema):
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(("Feature",)))
    id = ma.fields.String(required=True, metadata={"description": "Public id: <dataset id>.<position>"})
    geometry = ma.fields.Nested(GeometrySchema, required=True)
    properties = ma.fields.Dict(
        keys=ma.fields.String(), required=True,
        metadata={"description": "The normalized properties (GEODATA.md): kind, orientation, length_m, limits, "
                                 "capacity, rules, source, ..."},
    )


class LinkSchema(ma.Schema):
    href = ma.fields.String(required=True)
    rel = ma.fields.String(required=True, metadata={"example": "next"})
    type = ma.fields.String(required=True, metadata={"example": "application/geo+json"})
    title = ma.fields.String()


def link(href: str, rel: str, type_: str = "application/json", title: str | None = None) -> dict[str, str]:
    """One ``links`` entry."""
    out = {"href": href, "rel": rel, "type": type_}
    if title is not None:
        out["title"] = title
    return out
