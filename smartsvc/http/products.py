"""The product catalogue and the products users own, with telemetry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import marshmallow as ma
from flask import current_app
from flask.views import MethodView

from ..models import PRODUCT_KINDS, TelemetryReading
from ..services import products, telemetry
from .api import Blueprint, current_user_id
from .fields import JsonFloat, StorableDateTime
from .idempotency import idempotent
from .pagination import ListArgs, decode_cursor, page_body, page_schema

blp = Blueprint("products", __name__, url_prefix="/v1", description="Catalogue models and owned products")

CONNECTORS = ("type1", "type2", "ccs", "ccs1", "ccs2", "chademo", "nacs", "gbt", "schuko")


def _positive(maximum: float) -> ma.validate.Range:
    return ma.validate.Range(min=0, max=maximum, min_inclusive=False)


class AttributesSchema(ma.Schema):
    length_m = JsonFloat(validate=_positive(30), metadata={"example": 2.69})
    width_m = JsonFloat(validate=_positive(5), metadata={"example": 1.66})
    height_m = JsonFloat(validate=_positive(6), metadata={"example": 1.55})
    weight_kg = JsonFloat(validate=_positive(60_000))
    powertrain = ma.fields.String(validate=ma.validate.OneOf(("bev", "phev", "ice")))
    connectors = ma.fields.List(ma.fields.String(validate=ma.validate.OneOf(CONNECTORS)),
                                validate=ma.validate.Length(max=10))
    battery_kwh = JsonFloat(validate=_positive(1000))
    range_km = JsonFloat(validate=_positive(5000))
    service_interval_km = JsonFloat(validate=_positive(1_000_000))


class ModelCreateSchema(ma.Schema):
    kind = ma.fields.String(required=True, validate=ma.validate.OneOf(PRODUCT_KINDS))
    brand = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    attributes = ma.fields.Nested(AttributesSchema, load_default=dict)


class ModelSchema(ModelCreateSchema):
    id = ma.fields.UUID(required=True)
    attributes = ma.fields.Nested(AttributesSchema, required=True)
    created_at = ma.fields.DateTime(required=True)


class ModelListArgs(ListArgs):
    kind = ma.fields.String(load_default=None, validate=ma.validate.OneOf(PRODUCT_KINDS))


class OwnedCreateSchema(ma.Schema):
    model_id = ma.fields.UUID(required=True)
    nickname = ma.fields.String(load_default=None, allow_none=True, validate=ma.validate.Length(max=100))


class TelemetryValueSchema(ma.Schema):
    value = ma.fields.Raw(required=True)
    at = ma.fields.DateTime(required=True)


class OwnedSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    model_id = ma.fields.UUID(required=True)
    nickname = ma.fields.String(allow_none=True, required=True)
    model = ma.fields.Nested(ModelSchema, required=True)
    latest_telemetry = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Nested(TelemetryValueSchema), required=True,
        metadata={"description": "Newest value of each measurement, folded in by a worker"},
    )
    created_at = ma.fields.DateTime(required=True)


class TelemetryCreateSchema(ma.Schema):
    # "at" and at least one measurement.
    OPENAPI_EXTRA = {"anyOf": [{"required": [name]} for name in TelemetryReading.MEASUREMENTS]}

    at = StorableDateTime(required=True, metadata={"description": "When it was measured (RFC 3339)"})
    odometer_km = JsonFloat(validate=ma.validate.Range(min=0, max=10_000_000))
    battery_pct = JsonFloat(validate=ma.validate.Range(min=0, max=100))
    fuel_pct = JsonFloat(validate=ma.validate.Range(min=0, max=100))
    service_due_at = StorableDateTime()
    tire_pressure_bar = ma.fields.List(JsonFloat(validate=ma.validate.Range(min=0, max=20)),
                                       validate=ma.validate.Length(min=1, max=8))


class TelemetryAcceptedSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, metadata={"example": "accepted"})


class TelemetrySchema(TelemetryCreateSchema):
    id = ma.fields.UUID(required=True)
    at = ma.fields.DateTime(required=True)
    service_due_at = ma.fields.DateTime(allow_none=True)
    received_at = ma.fields.DateTime(required=True)
    processed_at = ma.fields.DateTime(allow_none=True, required=True)


def owned_body(pair: tuple[Any, Any]) -> dict[str, Any]:
    """An owned product with its catalogue model."""
    product, model = pair
    # Stored as JSON ({"value", "at": iso string}); the schema dumps datetimes.
    latest = {name: {"value": entry["value"], "at": datetime.fromisoformat(entry["at"])}
              for name, entry in (product.latest_telemetry or {}).items()}
    return {"id": product.id, "model_id": product.model_id, "nickname": product.nickname, "model": model,
            "latest_telemetry": latest, "created_at": product.created_at}


def _database() -> Any:
    return current_app.extensions["smartsvc"].database


@blp.route("/catalog/models")
class CatalogModels(MethodView):
    @blp.auth("operator")
    @idempotent()
    @blp.arguments(ModelCreateSchema)
    @blp.response(201, ModelSchema)
    def post(self, data):
        """Add a model to the catalogue"""
        return products.create_model(_database(), **data)

    @blp.auth("operator", "partner", "app", "agent", "user")
    @blp.arguments(ModelListArgs, location="query")
    @blp.response(200, page_schema(ModelSchema, "ModelPageSchema"))
    def get(self, args):
        """Catalogue models"""
        page = products.list_models(_database(), kind=args["kind"], limit=args["limit"],
                                    cursor=decode_cursor(args["cursor"]))
        return page_body(page)


@blp.route("/catalog/models/<uuid:model_id>")
class CatalogModelById(MethodView):
    @blp.auth("operator", "partner", "app", "agent", "user")
    @blp.response(200, ModelSchema)
    def get(self, model_id):
        """One catalogue model"""
        return products.get_model(_database(), model_id)


@blp.route("/me/products")
class OwnedProducts(MethodView):
    @blp.auth("user")
    @idempotent()
    @blp.arguments(OwnedCreateSchema)
    @blp.response(201, OwnedSchema)
    def post(self, data):
        """Say which product the caller owns"""
        limit = current_app.extensions["smartsvc"].settings.max_products_per_user
        return owned_body(products.add_owned_product(_database(), current_user_id(), max_products=limit, **data))

    @blp.auth("user")
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, page_schema(OwnedSchema, "OwnedPageSchema"))
    def get(self, args):
        """The caller's products"""
        page = products.list_owned_products(_database(), current_user_id(), limit=args["limit"],
                                            cursor=decode_cursor(args["cursor"]))
        return page_body(page, owned_body)


@blp.route("/me/products/<uuid:product_id>")
class OwnedProductById(MethodView):
    @blp.auth("user")
    @blp.response(200, OwnedSchema)
    def get(self, product_id):
        """One of the caller's products with its latest telemetry"""
        return owned_body(products.get_owned_product(_database(), current_user_id(), product_id))

    @blp.auth("user")
    @blp.response(204)
    def delete(self, product_id):
        """Remove a product and its telemetry"""
        products.delete_owned_product(_database(), current_user_id(), product_id)


@blp.route("/me/products/<uuid:product_id>/telemetry")
class Telemetry(MethodView):
    @blp.auth("user")
    @blp.arguments(TelemetryCreateSchema)
    @blp.response(202, TelemetryAcceptedSchema)
    def post(self, data, product_id):
        """Report telemetry (needs consent 'telemetry'); processed by a worker"""
        reading = telemetry.record_reading(_database(), current_user_id(), product_id, data)
        return {"id": reading.id, "status": "accepted"}

    @blp.auth("user")
    @blp.arguments(ListArgs, location="query")
    @blp.response(200, page_schema(TelemetrySchema, "TelemetryPageSchema"))
    def get(self, args, product_id):
        """The product's telemetry readings, oldest first"""
        page = telemetry.list_readings(_database(), current_user_id(), product_id, limit=args["limit"],
                                       cursor=decode_cursor(args["cursor"]))
        return page_body(page)
