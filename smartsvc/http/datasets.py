"""Datasets (operator): upload geodata files, follow their import, publish a version, delete one."""

from __future__ import annotations

import io
from typing import Any

import marshmallow as ma
from flask import current_app, url_for
from flask.views import MethodView
from flask_smorest.fields import Upload
from werkzeug.datastructures import FileStorage

from ..models import DATASET_FORMATS, DATASET_STATUSES, LAYERS, Dataset
from ..services import datasets
from ..services.dataset_import import MAX_ERRORS_KEPT
from ..timeutil import is_valid_time_zone
from .api import Blueprint, current_principal
from .fields import not_blank
from .idempotency import idempotent, multipart_fingerprint
from .pagination import ListArgs, decode_cursor, page_body, page_schema
from .uploads import large_upload
from .users import TIME_ZONE

blp = Blueprint("datasets", __name__, url_prefix="/v1/datasets",
                description="Geodata uploads: import, publish a version of a layer, roll back (operator)")


class _FileField(Upload):
    """The uploaded file: a file part, or (``curl -F 'file=<x.json'``) a text field holding the content."""

    default_error_messages = {"invalid": "must be the file, sent as a multipart/form-data part"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> FileStorage:
        if isinstance(value, FileStorage):
            return value
        if isinstance(value, str):
            return FileStorage(io.BytesIO(value.encode()), name=attr)
        raise self.make_error("invalid")


class _Layer(ma.validate.OneOf):
    """One of the layers a file can be uploaded to, with a pointer for geofences."""

    def __call__(self, value: Any) -> Any:
        if value == "geofences":
            raise ma.ValidationError(datasets.GEOFENCES_MESSAGE)
        return super().__call__(value)


def _check_time_zone(value: str) -> None:
    if not is_valid_time_zone(value):
        raise ma.ValidationError("is not an IANA time zone such as 'Europe/Berlin'")


class DatasetUploadSchema(ma.Schema):
    file = _FileField(required=True, metadata={
        "description": "The geodata file: GeoJSON, CSV, OSM GeoJSON, CurbLR or CDS (GEODATA.md)"})
    name = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=datasets.MAX_NAME_LENGTH),
                                                     not_blank()],
                            metadata={"example": "Paris on-street parking, June"})
    layer = ma.fields.String(required=True, validate=_Layer(datasets.UPLOADABLE_LAYERS), metadata={
        "description": "The layer it becomes a version of (geofences are managed through /v1/geofences)"})
    format = ma.fields.String(validate=ma.validate.OneOf(DATASET_FORMATS), metadata={
        "description": "Detected from the content when left out; a file that is not what it claims fails"})
    time_zone = ma.fields.String(validate=[ma.validate.Length(min=1, max=64), _check_time_zone], metadata={
        **TIME_ZONE,
        "description": "IANA time zone the rules' local times are read in (a CurbLR manifest brings its own; "
                       "this one wins when given)",
    })


class DatasetAcceptedSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    status = ma.fields.String(required=True, metadata={"example": "queued"})


class ProgressSchema(ma.Schema):
    done = ma.fields.Integer(required=True, metadata={"description": "Bytes of the uploaded file read so far"})
    total = ma.fields.Integer(required=True, metadata={"description": "Size of the uploaded file in bytes"})


class CountsSchema(ma.Schema):
    accepted = ma.fields.Integer(required=True, metadata={"description": "Input features that gave a spot"})
    rejected = ma.fields.Integer(required=True, metadata={"description": "Input features rejected (see errors)"})
    repaired = ma.fields.Integer(required=True, metadata={
        "description": "Input features kept after a safe geometry repair"})
    spots = ma.fields.Integer(required=True, metadata={
        "description": "Normalized features stored (an OSM road with parking on both sides gives two)"})


class IssueSchema(ma.Schema):
    feature = ma.fields.Raw(required=True, metadata={
        "oneOf": [{"type": "integer"}, {"type": "string"}],
        "description": "The feature's index in the file, or its id",
    })
    field = ma.fields.String(required=True)
    message = ma.fields.String(required=True, metadata={
        "example": "maxheight '2,2 m' is not a number in metres"})
    level = ma.fields.String(required=True, validate=ma.validate.OneOf(("error", "warning", "repaired")), metadata={
        "description": "error: the feature was rejected; warning: something was ignored; repaired: kept after "
                       "a safe repair"})


class DatasetSchema(ma.Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    layer = ma.fields.String(required=True, validate=ma.validate.OneOf(LAYERS))
    format = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "The format asked for, or the detected one once the import has looked"})
    time_zone = ma.fields.String(required=True, allow_none=True, metadata=TIME_ZONE)
    status = ma.fields.String(required=True, validate=ma.validate.OneOf(DATASET_STATUSES))
    progress = ma.fields.Nested(ProgressSchema, required=True, metadata={
        "description": "How far the import has read the file, in bytes"})
    counts = ma.fields.Nested(CountsSchema, required=True)
    errors = ma.fields.List(ma.fields.Nested(IssueSchema), required=True, metadata={
        "description": f"The first {MAX_ERRORS_KEPT} problems found, per feature"})
    errors_total = ma.fields.Integer(required=True, metadata={"description": "All problems found"})
    failure = ma.fields.String(required=True, allow_none=True, metadata={
        "description": "Why the whole file failed (not what it claims to be, past a limit)"})
    file_name = ma.fields.String(required=True, allow_none=True)
    file_size = ma.fields.Integer(required=True, metadata={"description": "Bytes"})
    bbox = ma.fields.List(ma.fields.Float(), required=True, allow_none=True, validate=ma.validate.Length(equal=4),
                          metadata={"description": "min_lon, min_lat, max_lon, max_lat of the stored features"})
    created_at = ma.fields.DateTime(required=True)
    started_at = ma.fields.DateTime(required=True, allow_none=True)
    finished_at = ma.fields.DateTime(required=True, allow_none=True)
    published_at = ma.fields.DateTime(required=True, allow_none=True, metadata={
        "description": "When it was last made the live version of its layer"})


class DatasetListArgs(ListArgs):
    layer = ma.fields.String(load_default=None, validate=ma.validate.OneOf(LAYERS))
    status = ma.fields.String(load_default=None, validate=ma.validate.OneOf(DATASET_STATUSES))


def dataset_body(dataset: Dataset) -> dict[str, Any]:
    """A dataset as the API shows it."""
    bbox = None
    if dataset.bbox_min_lon is not None:
        bbox = [dataset.bbox_min_lon, dataset.bbox_min_lat, dataset.bbox_max_lon, dataset.bbox_max_lat]
    return {
        "id": dataset.id, "name": dataset.name, "layer": dataset.layer, "format": dataset.format,
        "time_zone": dataset.time_zone, "status": dataset.status,
        "progress": {"done": dataset.progress_done, "total": dataset.progress_total},
        "counts": {"accepted": dataset.accepted, "rejected": dataset.rejected, "repaired": dataset.repaired,
                   "spots": dataset.spots},
        "errors": dataset.errors or [], "errors_total": dataset.errors_total, "failure": dataset.failure,
        "file_name": dataset.file_name, "file_size": dataset.file_size, "bbox": bbox,
        "created_at": dataset.created_at, "started_at": dataset.started_at, "finished_at": dataset.finished_at,
        "published_at": dataset.published_at,
    }


def _container() -> Any:
    return current_app.extensions["smartsvc"]


def _location(body: dict[str, Any]) -> dict[str, str]:
    return {"Location": url_for("datasets.DatasetById", dataset_id=body["id"])}


LOCATION_HEADER = {"Location": {"description": "The new dataset: poll it for progress",
                                "schema": {"type": "string"}}}


@blp.route("")
class Datasets(MethodView):
    @blp.auth("operator")
    @large_upload(lambda settings: settings.max_upload_bytes, lambda settings: settings.upload_folder)
    @idempotent(fingerprint=multipart_fingerprint, replay_headers=_location)
    @blp.arguments(DatasetUploadSchema, location="multipart")
    @blp.response(202, DatasetAcceptedSchema, headers=LOCATION_HEADER)
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, data):
        """Upload a geodata file (multipart); a worker imports it: poll the dataset for progress"""
        container = _container()
        upload: FileStorage = data["file"]
        dataset = datasets.create_dataset(
            container.database, container.settings, upload.stream, name=data["name"], layer=data["layer"],
            fmt=data.get("format"), time_zone=data.get("time_zone"), file_name=upload.filename,
            created_by=current_principal().ident, max_bytes=container.settings.max_upload_bytes,
        )
        body = {"id": dataset.id, "status": dataset.status}
        return body, 202, _location(body)

    @blp.auth("operator")
    @blp.arguments(DatasetListArgs, location="query")
    @blp.response(200, page_schema(DatasetSchema, "DatasetPageSchema"))
    def get(self, args):
        """Datasets in upload order, optionally of one layer or status"""
        page = datasets.list_datasets(_container().database, layer=args["layer"], status=args["status"],
                                      limit=args["limit"], cursor=decode_cursor(args["cursor"]))
        return page_body(page, dataset_body)


@blp.route("/<uuid:dataset_id>")
class DatasetById(MethodView):
    @blp.auth("operator")
    @blp.response(200, DatasetSchema)
    def get(self, dataset_id):
        """One dataset: status, progress, counts and the problems found per feature"""
        return dataset_body(datasets.get_dataset(_container().database, dataset_id))

    @blp.auth("operator")
    @blp.response(204)
    @blp.alt_response(409, response="CONFLICT")
    def delete(self, dataset_id):
        """Delete a dataset and its features (not the live one: publish another first)"""
        datasets.delete_dataset(_container().database, _container().settings, dataset_id)


@blp.route("/<uuid:dataset_id>/publish")
class DatasetPublish(MethodView):
    @blp.auth("operator")
    @blp.response(200, DatasetSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, dataset_id):
        """Make it the live version of its layer, atomically (a superseded one: the rollback)"""
        return dataset_body(datasets.publish_dataset(_container().database, dataset_id))
