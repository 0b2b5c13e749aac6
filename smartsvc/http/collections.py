"""``/v1/collections``: each layer's live version as a GeoJSON feature collection (OGC API Features style).

Readable with any valid credential (an API key of any role or a user token):
the layers are what the service offers everyone, and a map in the app shows
them. Field names OGC defines (``itemType``, ``extent``, ``numberReturned``,
``links``) keep their OGC spelling.
"""

from __future__ import annotations

import re
from typing import Any

import marshmallow as ma
from flask import current_app, request, url_for
from flask.views import MethodView

from ..models import LAYERS
from ..services import collections
from .api import Blueprint
from .feature_cursor import FEATURE_CURSOR_PATTERN, decode_feature_cursor, encode_feature_cursor
from .geojson import FeatureSchema, LinkSchema, link
from .pagination import ListArgs

blp = Blueprint("collections", __name__, url_prefix="/v1",
                description="The live version of each geodata layer, as GeoJSON (OGC API Features style)")

READERS = ("operator", "partner", "app", "agent", "user")
LAYER_RULE = f"<any({', '.join(LAYERS)}):layer>"
TITLES = {"parking": "Parking", "pois": "Points of interest", "geofences": "Geofences"}
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"

_LON = r"-?(180(\.0+)?|(1[0-7][0-9]|[0-9]{1,2})(\.[0-9]+)?)"
_LAT = r"-?(90(\.0+)?|[0-8]?[0-9](\.[0-9]+)?)"
BBOX_PATTERN = rf"^{_LON},{_LAT},{_LON},{_LAT}$"


class BBoxField(ma.fields.String):
    """``minLon,minLat,maxLon,maxLat`` in degrees; minLon > maxLon crosses the antimeridian."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[float, ...]:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.match(BBOX_PATTERN, text):
            raise ma.ValidationError(
                "must be minLon,minLat,maxLon,maxLat in decimal degrees (longitudes -180..180, "
                "latitudes -90..90), e.g. 2.34,48.85,2.36,48.86")
        west, south, east, north = (float(part) for part in text.split(","))
        if south > north:
            raise ma.ValidationError(f"minLat {south:g} is north of maxLat {north:g}; the order is "
                                     "minLon,minLat,maxLon,maxLat")
        return west, south, east, north


class ItemsArgs(ListArgs):
    bbox = BBoxField(
        load_default=None,
        metadata={"pattern": BBOX_PATTERN, "example": "2.34,48.85,2.36,48.86",
                  "description": "Only features whose geometry intersects this box: minLon,minLat,maxLon,maxLat "
                                 "(WGS 84; minLat ≤ maxLat; minLon > maxLon crosses the antimeridian)"},
    )
    cursor = ma.fields.String(
        load_default=None,
        validate=ma.validate.Regexp(FEATURE_CURSOR_PATTERN, error="is not a cursor returned by this list; "
                                                                  "start without one"),
        metadata={"description": "next_cursor of the previous page"},
    )


class LiveDatasetSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    time_zone = ma.fields.String(required=True, allow_none=True)
    published_at = ma.fields.DateTime(required=True, allow_none=True)


class SpatialExtentSchema(ma.Schema):
    bbox = ma.fields.List(ma.fields.List(ma.fields.Float()), required=True)
    crs = ma.fields.String(required=True)


class ExtentSchema(ma.Schema):
    spatial = ma.fields.Nested(SpatialExtentSchema, required=True)


class CollectionSchema(ma.Schema):
    id = ma.fields.String(required=True, validate=ma.validate.OneOf(LAYERS))
    title = ma.fields.String(required=True)
    itemType = ma.fields.String(required=True, metadata={"example": "feature"})
    live_dataset = ma.fields.Nested(LiveDatasetSchema, required=True, allow_none=True,
                                    metadata={"description": "The published dataset readers see; null before "
                                                             "the first publish"})
    version = ma.fields.Integer(required=True, metadata={"description": "Grows with every publish"})
    feature_count = ma.fields.Integer(required=True)
    bbox = ma.fields.List(ma.fields.Float(), required=True, allow_none=True,
                          metadata={"description": "[minLon, minLat, maxLon, maxLat] of the live features"})
    extent = ma.fields.Nested(ExtentSchema, required=True, allow_none=True)
    links = ma.fields.List(ma.fields.Nested(LinkSchema), required=True)


class CollectionsSchema(ma.Schema):
    collections = ma.fields.List(ma.fields.Nested(CollectionSchema), required=True)
    links = ma.fields.List(ma.fields.Nested(LinkSchema), required=True)


class FeatureCollectionSchema(ma.Schema):
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(("FeatureCollection",)))
    features = ma.fields.List(ma.fields.Nested(FeatureSchema), required=True)
    numberReturned = ma.fields.Integer(required=True)
    next_cursor = ma.fields.String(required=True, allow_none=True)
    links = ma.fields.List(ma.fields.Nested(LinkSchema), required=True,
                           metadata={"description": "self, collection and, when there is more, next"})


def _container() -> Any:
    return current_app.extensions["smartsvc"]


def _collection_body(collection: collections.Collection) -> dict[str, Any]:
    layer, dataset, bbox = collection.layer, collection.dataset, collection.extent.bbox
    return {
        "id": layer,
        "title": TITLES.get(layer, layer),
        "itemType": "feature",
        "live_dataset": None if dataset is None else {
            "id": dataset.id, "name": dataset.name, "time_zone": dataset.time_zone,
            "published_at": dataset.published_at,
        },
        "version": collection.version,
        "feature_count": collection.extent.feature_count,
        "bbox": None if bbox is None else list(bbox),
        "extent": None if bbox is None else {"spatial": {"bbox": [list(bbox)], "crs": CRS84}},
        "links": [
            link(url_for("collections.CollectionByLayer", layer=layer), "self"),
            link(url_for("collections.CollectionItems", layer=layer), "items", title="The live features"),
        ],
    }


@blp.route("/collections")
class Collections(MethodView):
    @blp.auth(*READERS)
    @blp.response(200, CollectionsSchema)
    def get(self):
        """Every layer with its live dataset, feature count and extent"""
        found = collections.list_collections(_container().database, _container().dataset_extents)
        return {"collections": [_collection_body(c) for c in found],
                "links": [link(url_for("collections.Collections"), "self")]}


@blp.route(f"/collections/{LAYER_RULE}")
class CollectionByLayer(MethodView):
    @blp.auth(*READERS)
    @blp.response(200, CollectionSchema)
    def get(self, layer):
        """One layer with its live dataset, feature count and extent"""
        return _collection_body(collections.get_collection(_container().database, _container().dataset_extents,
                                                           layer))


@blp.route(f"/collections/{LAYER_RULE}/items")
class CollectionItems(MethodView):
    @blp.auth(*READERS)
    @blp.arguments(ItemsArgs, location="query")
    @blp.response(200, FeatureCollectionSchema)
    @blp.alt_response(409, response="CONFLICT")
    def get(self, args, layer):
        """The live version's features, in the normalized properties, page by page

        Features are in dataset order; `next_cursor` (also the `next` link) continues. A cursor is
        bound to the live version it started on: after a new publish it is refused (409).
        """
        page = collections.list_features(_container().database, layer, bbox=args["bbox"], limit=args["limit"],
                                         after=decode_feature_cursor(args["cursor"]))
        next_cursor = encode_feature_cursor(*page.next_after) if page.next_after else None
        query = {"bbox": request.args.get("bbox"), "limit": args["limit"]}
        links = [
            link(url_for("collections.CollectionItems", layer=layer, **query, cursor=args["cursor"] or None), "self"),
            link(url_for("collections.CollectionByLayer", layer=layer), "collection"),
        ]
        if next_cursor:
            links.append(link(url_for("collections.CollectionItems", layer=layer, **query, cursor=next_cursor),
                              "next", title="The next page"))
        return {
            "type": "FeatureCollection",
            "features": [{"type": "Feature", "id": f.id, "geometry": f.geometry, "properties": f.properties}
                         for f in page.features],
            "numberReturned": len(page.features),
            "next_cursor": next_cursor,
            "links": links,
        }
