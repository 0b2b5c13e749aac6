"""Datasets end to end on SQLite and PostgreSQL: upload → import → ready → publish → rollback → delete.

The import runs in-process here (``run_import``, what the worker task calls);
``test_worker.py`` runs it in a real worker through the outbox and
``test_cli_import.py`` through ``smartsvc import``.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from smartsvc.models import Dataset, LayerFeature, OutboxMessage
from smartsvc.services.dataset_import import run_import
from smartsvc.services.datasets import IMPORT_TASK, delete_dataset, purge_stale_uploads
from smartsvc.services.layers import live_layer
from tests.integration.conftest import close_app
from tests.support.data import PORTLAND_CURBLR
from tests.support.factories import api_key, bearer, make_app, make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "geodata" / "fixtures"
PORTLAND = PORTLAND_CURBLR
PARIS = (2.2, 48.8, 2.5, 48.95)


@pytest.fixture
def make_dataset_app(db_settings) -> Iterator[Any]:
    """Build apps on this test's database (SQLite or PostgreSQL) with settings changed."""
    apps: list[Flask] = []

    def build(**changes: Any) -> Flask:
        app = make_app(db_settings.replace(**changes))
        apps.append(app)
        return app

    yield build
    for app in apps:
        close_app(app)


class Operator:
    """An app, its test client and an operator key; helpers for the dataset calls."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()
        self.headers = bearer(api_key(app, "operator"))

    @property
    def database(self) -> Any:
        return self.app.extensions["smartsvc"].database

    @property
    def settings(self) -> Any:
        return self.app.extensions["smartsvc"].settings

    def upload(self, content: bytes, *, name: str = "test data", layer: str = "parking", file_name: str = "data",
               expect: int = 202, headers: dict[str, str] | None = None, **fields: Any) -> Any:
        form = {"file": (io.BytesIO(content), file_name), "name": name, "layer": layer, **fields}
        response = self.client.post("/v1/datasets", data=form, content_type="multipart/form-data",
                                    headers={**self.headers, **(headers or {})})
        assert response.status_code == expect, response.get_json()
        return response

    def upload_file(self, path: Path, **fields: Any) -> str:
        return self.upload(path.read_bytes(), file_name=path.name, **fields).get_json()["id"]

    def run(self, dataset_id: str, **kwargs: Any) -> Any:
        return run_import(self.database, self.settings, uuid.UUID(dataset_id), **kwargs)

    def imported(self, path_or_bytes: Path | bytes, **fields: Any) -> dict[str, Any]:
        """Upload, import in-process, return the dataset as the API shows it."""
        if isinstance(path_or_bytes, Path):
            dataset_id = self.upload_file(path_or_bytes, **fields)
        else:
            dataset_id = self.upload(path_or_bytes, **fields).get_json()["id"]
        self.run(dataset_id)
        return self.get(dataset_id)

    def get(self, dataset_id: str, expect: int = 200) -> dict[str, Any]:
        response = self.client.get(f"/v1/datasets/{dataset_id}", headers=self.headers)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def publish(self, dataset_id: str, expect: int = 200) -> dict[str, Any]:
        response = self.client.post(f"/v1/datasets/{dataset_id}/publish", headers=self.headers)
        assert response.status_code == expect, response.get_json()
        return response.get_json()

    def delete(self, dataset_id: str, expect: int = 204) -> Any:
        response = self.client.delete(f"/v1/datasets/{dataset_id}", headers=self.headers)
        assert response.status_code == expect, response.get_json()
        return response

    def feature_count(self, dataset_id: str) -> int:
        with self.database.session() as session:
            return session.scalar(select(func.count()).select_from(LayerFeature).where(
                LayerFeature.dataset_id == uuid.UUID(dataset_id))) or 0

    def live(self, layer: str = "parking") -> Any:
        with self.database.session() as session:
            return live_layer(session, layer)

    def uploads(self) -> list[Path]:
        folder = self.settings.upload_folder
        return sorted(folder.iterdir()) if folder.exists() else []


@pytest.fixture
def operator(make_dataset_app) -> Operator:
    return Operator(make_dataset_app())


def feature_collection(features: list[dict[str, Any]]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def space(fid: str, lon: float = 2.35, lat: float = 48.85, **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "id": fid, "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"kind": "space", "rules": [{"activity": "parking"}], **properties}}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    return response.get_json()


# --------------------------------------------------------------------------- the whole life of a dataset


def test_upload_import_publish_rollback_delete(operator):
    first = operator.upload_file(FIXTURES / "normalized.geojson", name="Paris v1", time_zone="Europe/Paris")
    queued = operator.get(first)
    assert (queued["status"], queued["name"], queued["layer"], queued["time_zone"]) == (
        "queued", "Paris v1", "parking", "Europe/Paris")
    assert queued["progress"] == {"done": 0, "total": (FIXTURES / "normalized.geojson").stat().st_size}
    assert len(operator.uploads()) == 1

    assert operator.run(first).status == "ready"
    ready = operator.get(first)
    assert ready["status"] == "ready" and ready["format"] == "geojson" and ready["failure"] is None
    # Without a service area the swapped point is a valid one (in the Indian Ocean).
    assert ready["counts"] == {"accepted": 5, "rejected": 3, "repaired": 1, "spots": 5}
    assert ready["progress"]["done"] == ready["progress"]["total"] == ready["file_size"]
    assert ready["errors_total"] == len(ready["errors"]) == 6
    by_feature = {e["feature"]: e for e in ready["errors"]}
    assert by_feature["bad-height"] == {"feature": "bad-height", "field": "max_vehicle_height_m", "level": "error",
                                        "message": "max_vehicle_height_m '2,2 m' is not a number in metres"}
    assert by_feature["unclosed"]["level"] == "repaired"
    assert ready["bbox"] is not None and ready["started_at"] and ready["finished_at"]
    assert operator.feature_count(first) == 5
    assert operator.uploads() == [], "the upload is deleted once imported"
    assert operator.live().dataset_id is None, "nothing is live before a publish"

    published = operator.publish(first)
    assert published["status"] == "published" and published["published_at"]
    assert (operator.live().dataset_id, operator.live().version) == (uuid.UUID(first), 1)

    second = operator.imported(FIXTURES / "spots.csv", name="Paris v2")["id"]
    operator.publish(second)
    assert operator.get(first)["status"] == "superseded"
    assert (operator.live().dataset_id, operator.live().version) == (uuid.UUID(second), 2)

    # Rollback: the superseded version is live again, the newer one superseded.
    assert operator.publish(first)["status"] == "published"
    assert operator.get(second)["status"] == "superseded"
    assert (operator.live().dataset_id, operator.live().version) == (uuid.UUID(first), 3)
    # Publishing the live one again changes nothing.
    assert operator.publish(first)["status"] == "published"
    assert operator.live().version == 3

    conflict = problem(operator.delete(first, expect=409), 409)
    assert "publish another dataset" in conflict["detail"]
    assert operator.feature_count(first) == 5

    operator.delete(second)
    operator.get(second, expect=404)
    assert operator.feature_count(second) == 0
    assert operator.live().dataset_id == uuid.UUID(first)


def test_only_ready_or_superseded_datasets_can_be_published(operator):
    queued = operator.upload(feature_collection([space("a")])).get_json()["id"]
    body = problem(operator.client.post(f"/v1/datasets/{queued}/publish", headers=operator.headers), 409)
    assert "queued" in body["detail"] and body["errors"] == {"status": ["is queued; must be ready or superseded"]}

    failed = operator.imported(b"this is not geodata", name="broken")
    assert failed["status"] == "failed"
    body = problem(operator.client.post(f"/v1/datasets/{failed['id']}/publish", headers=operator.headers), 409)
    assert "failed" in body["detail"]
    assert operator.live().dataset_id is None

    missing = operator.client.post(f"/v1/datasets/{uuid.uuid4()}/publish", headers=operator.headers)
    problem(missing, 404)
    problem(operator.client.delete(f"/v1/datasets/{uuid.uuid4()}", headers=operator.headers), 404)


def test_layers_have_their_own_live_version(operator):
    parking = operator.imported(feature_collection([space("p")]), layer="parking")["id"]
    pois = operator.imported(feature_collection([space("c", kind="charger", connectors=["type2"])]), layer="pois")
    operator.publish(parking)
    operator.publish(pois["id"])

    assert operator.live("parking").dataset_id == uuid.UUID(parking)
    assert operator.live("pois").dataset_id == uuid.UUID(pois["id"])
    assert operator.get(parking)["status"] == "published"


def test_the_list_pages_and_filters_by_layer_and_status(operator):
    ids = [operator.upload(feature_collection([space(f"s{i}")]), name=f"n{i}", layer=layer).get_json()["id"]
           for i, layer in enumerate(["parking", "pois", "parking", "parking"])]
    operator.run(ids[0])

    seen, cursor = [], None
    while True:
        query = "/v1/datasets?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = operator.client.get(query, headers=operator.headers).get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids

    parking = operator.client.get("/v1/datasets?layer=parking", headers=operator.headers).get_json()
    assert [d["id"] for d in parking["items"]] == [ids[0], ids[2], ids[3]]
    ready = operator.client.get("/v1/datasets?status=ready", headers=operator.headers).get_json()
    assert [d["id"] for d in ready["items"]] == [ids[0]] and ready["items"][0]["counts"]["spots"] == 1
    bad = operator.client.get("/v1/datasets?status=done", headers=operator.headers)
    assert "status" in problem(bad, 422)["errors"]


# --------------------------------------------------------------------------- the upload request


def test_the_upload_is_stored_with_its_import_enqueued_in_one_transaction(operator):
    response = operator.upload(feature_collection([space("a")]), file_name="../../etc/passwd")
    body = response.get_json()
    assert body["status"] == "queued"
    assert response.headers["Location"].endswith(f"/v1/datasets/{body['id']}")

    with operator.database.session() as session:
        dataset = session.get(Dataset, uuid.UUID(body["id"]))
        messages = list(session.scalars(select(OutboxMessage).where(OutboxMessage.task == IMPORT_TASK)))
    assert [m.payload for m in messages] == [{"dataset_id": body["id"]}]
    assert dataset.file_name == "passwd" and dataset.created_by.startswith("key:")
    assert [p.name for p in operator.uploads()] == [f"{body['id']}.upload"]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"layer": "geofences"}, "layer", "geofences are managed through /v1/geofences"),
        ({"layer": "roads"}, "layer", "Must be one of"),
        ({"time_zone": "Mars/Olympus"}, "time_zone", "is not an IANA time zone"),
        ({"format": "shapefile"}, "format", "Must be one of"),
        ({"name": "   "}, "name", "must not be blank"),
        ({"name": "nul\x00name"}, "name", "NUL"),
        ({"colour": "blue"}, "colour", "Unknown field"),
    ],
)
def test_bad_upload_fields_are_422_naming_the_field_and_keep_nothing(operator, fields, field, message):
    form = {"file": (io.BytesIO(feature_collection([space("a")])), "a.geojson"), "name": "n", "layer": "parking",
            **fields}
    response = operator.client.post("/v1/datasets", data=form, content_type="multipart/form-data",
                                    headers=operator.headers)

    body = problem(response, 422)
    assert field in body["errors"], body
    assert any(message in m for m in body["errors"][field]), body
    assert operator.uploads() == []
    assert operator.client.get("/v1/datasets", headers=operator.headers).get_json()["items"] == []


def test_a_missing_file_or_a_json_body_is_422_naming_the_fields(operator):
    no_file = operator.client.post("/v1/datasets", data={"name": "n", "layer": "parking"},
                                   content_type="multipart/form-data", headers=operator.headers)
    assert problem(no_file, 422)["errors"] == {"file": ["Missing data for required field."]}

    as_json = operator.client.post("/v1/datasets", json={"name": "n", "layer": "parking"}, headers=operator.headers)
    assert set(problem(as_json, 422)["errors"]) == {"file", "name", "layer"}


def test_a_multipart_part_without_a_name_is_422_not_a_500(operator):
    body = (b'--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.json"\r\n\r\n{}\r\n--b--\r\n')
    response = operator.client.post("/v1/datasets", data=body, content_type="multipart/form-data; boundary=b",
                                    headers=operator.headers)

    assert set(problem(response, 422)["errors"]) >= {"name", "layer"}


def test_the_file_may_come_as_a_text_field(operator):
    """``curl -F 'file=<spots.geojson'`` sends the content as a plain field."""
    response = operator.client.post(
        "/v1/datasets", content_type="multipart/form-data", headers=operator.headers,
        data={"file": feature_collection([space("a")]).decode(), "name": "n", "layer": "parking"})
    assert response.status_code == 202, response.get_json()

    assert operator.run(response.get_json()["id"]).status == "ready"


def test_an_upload_over_the_upload_limit_is_413_and_keeps_nothing(make_dataset_app):
    operator = Operator(make_dataset_app(max_upload_bytes=4096, max_body_bytes=2048))
    big = feature_collection([space(f"s{i}", name="x" * 100) for i in range(40)])
    assert len(big) > 4096

    body = problem(operator.upload(big, expect=413), 413)
    assert body["title"] == "Request Entity Too Large"
    assert operator.uploads() == []
    with operator.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_the_upload_route_has_its_own_body_limit_and_other_routes_keep_theirs(make_dataset_app):
    operator = Operator(make_dataset_app(max_upload_bytes=1 << 20, max_body_bytes=2048))
    content = feature_collection([space(f"s{i}", name="x" * 100) for i in range(100)])
    assert 2048 * 4 < len(content) < 1 << 20

    dataset_id = operator.upload(content).get_json()["id"]
    assert operator.run(dataset_id).status == "ready"
    assert operator.get(dataset_id)["counts"]["spots"] == 100
    model = operator.client.post("/v1/catalog/models", headers=operator.headers,
                                 json={"kind": "car", "brand": "b", "name": "x" * 5000})
    problem(model, 413)


def _chunked_multipart(fields: dict[str, str], file_bytes: bytes, chunk: int = 4096) -> tuple[Iterator[bytes], str]:
    boundary = "smartsvcboundary"
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ) + f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.geojson"\r\n' \
        f"Content-Type: application/geo+json\r\n\r\n".encode()
    body = head + file_bytes + f"\r\n--{boundary}--\r\n".encode()
    return io.BytesIO(body), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(("limit", "status"), [(1 << 20, 202), (8192, 413)])
def test_a_chunked_upload_is_held_to_the_upload_limit_not_the_body_limit(make_dataset_app, limit, status):
    operator = Operator(make_dataset_app(max_upload_bytes=limit, max_body_bytes=2048))
    content = feature_collection([space(f"s{i}", name="x" * 100) for i in range(100)])
    stream, content_type = _chunked_multipart({"name": "chunked", "layer": "parking"}, content)

    response = operator.client.post(
        "/v1/datasets", input_stream=stream, headers={**operator.headers, "Content-Type": content_type,
                                                      "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True})

    assert response.status_code == status, response.get_data(as_text=True)
    if status == 202:
        assert operator.run(response.get_json()["id"]).status == "ready"
    else:
        assert operator.uploads() == []


def test_an_idempotency_key_returns_the_first_upload_and_refuses_another_file(operator):
    content = feature_collection([space("a")])
    first = operator.upload(content, headers={"Idempotency-Key": "upload-1"})
    again = operator.upload(content, headers={"Idempotency-Key": "upload-1"})

    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert len(operator.client.get("/v1/datasets", headers=operator.headers).get_json()["items"]) == 1

    other = operator.upload(feature_collection([space("b")]), headers={"Idempotency-Key": "upload-1"}, expect=422)
    assert "Idempotency-Key" in problem(other, 422)["errors"]
    assert len(operator.uploads()) == 1


# --------------------------------------------------------------------------- bad and hostile files


@pytest.mark.parametrize(
    ("content", "fields", "failure"),
    [
        (b"{this is not json", {}, "not a GeoJSON, CSV, OSM, CurbLR or CDS file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", {}, "binary"),
        (b"", {}, "empty"),
        ((FIXTURES / "spots.csv").read_bytes(), {"format": "geojson"}, "declared as GeoJSON but it looks like CSV"),
        ((FIXTURES / "normalized.geojson").read_bytes(), {"format": "curblr"}, "declared as CurbLR"),
        (b'{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": null, ', {},
         "not valid JSON"),
    ],
    ids=["not-json", "binary", "empty", "csv-claimed-geojson", "geojson-claimed-curblr", "truncated-json"],
)
def test_a_file_that_is_not_what_it_claims_fails_clearly_with_nothing_left(operator, content, fields, failure):
    dataset = operator.imported(content, **fields)

    assert dataset["status"] == "failed"
    assert failure in dataset["failure"]
    assert dataset["counts"]["spots"] == 0 and operator.feature_count(dataset["id"]) == 0
    assert operator.uploads() == [] and operator.live().dataset_id is None


def test_past_the_features_limit_the_file_fails_and_no_batch_is_left(make_dataset_app):
    operator = Operator(make_dataset_app(import_max_features=5))
    dataset_id = operator.upload(feature_collection([space(f"s{i}") for i in range(8)])).get_json()["id"]
    written: list[int] = []

    operator.run(dataset_id, batch_size=2, on_progress=lambda done, total: written.append(
        operator.feature_count(dataset_id)))

    dataset = operator.get(dataset_id)
    assert written[:2] == [2, 4], "batches were written before the limit was reached"
    assert dataset["status"] == "failed"
    assert dataset["failure"] == "the file has more than 5 features, the limit per file"
    assert operator.feature_count(dataset_id) == 0 and dataset["counts"]["spots"] == 0
    assert operator.uploads() == [] and operator.live().dataset_id is None
    problem(operator.client.post(f"/v1/datasets/{dataset_id}/publish", headers=operator.headers), 409)


def test_features_past_the_vertex_or_depth_limits_are_rejected_one_by_one(make_dataset_app):
    operator = Operator(make_dataset_app(import_max_vertices=10, import_max_depth=4))
    long_line = {"type": "Feature", "id": "long", "properties": {"kind": "curb", "rules": [{"activity": "parking"}]},
                 "geometry": {"type": "LineString", "coordinates": [[2.35 + i * 1e-5, 48.85] for i in range(20)]}}
    nested: Any = "bottom"
    for _ in range(50):
        nested = [nested]
    deep = space("deep", extra=nested)

    dataset = operator.imported(feature_collection([long_line, deep, space("fine")]))

    assert dataset["status"] == "ready"
    assert dataset["counts"] == {"accepted": 1, "rejected": 2, "repaired": 0, "spots": 1}
    messages = {e["feature"]: e["message"] for e in dataset["errors"]}
    assert messages["long"] == "LineString has 20 vertices; the limit is 10"
    assert messages["deep"] == "properties nests 51 levels deep; the limit is 4"


def test_swapped_coordinates_are_rejected_against_the_service_area(make_dataset_app):
    operator = Operator(make_dataset_app(service_area=PARIS))

    dataset = operator.imported(FIXTURES / "normalized.geojson")

    swapped = next(e for e in dataset["errors"] if e["feature"] == "swapped")
    assert swapped["field"] == "geometry" and "look swapped" in swapped["message"]
    assert dataset["bbox"][1] > 48 and dataset["bbox"][0] > 2, "nothing outside the service area is stored"
    assert dataset["counts"]["rejected"] == 4


def test_invalid_geometry_is_repaired_when_safe_and_reported(operator):
    dataset = operator.imported(FIXTURES / "normalized.geojson")

    by_feature = {e["feature"]: e for e in dataset["errors"]}
    assert by_feature["unclosed"]["level"] == "repaired"
    assert "closed by repeating its first position" in by_feature["unclosed"]["message"]
    assert by_feature["bowtie"]["level"] == "error" and "crosses itself" in by_feature["bowtie"]["message"]
    assert dataset["counts"]["repaired"] == 1


def test_text_no_database_can_store_is_replaced_not_a_failed_import(operator):
    hostile = feature_collection([space("nul\u0000id", name="bad\u0000name"), space("ok", name="fine")])
    hostile = hostile.replace(b"fine", b"\\ud800lone")  # an unpaired surrogate, as JSON allows

    dataset = operator.imported(hostile)

    assert dataset["status"] == "ready" and dataset["counts"]["spots"] == 2
    with operator.database.session() as session:
        names = sorted(p["name"] for p in session.scalars(select(LayerFeature.properties)))
    assert names[1] == "bad\ufffdname"
    # The JSON parser already replaces a lone surrogate ("?"); either way it is never stored.
    assert names[0] in ("?lone", "\ufffdlone")


def test_only_the_first_thousand_problems_are_kept_with_the_total(operator):
    features = [space(f"bad{i}", max_vehicle_height_m="tall") for i in range(1200)] + [space("ok")]

    dataset = operator.imported(feature_collection(features))

    assert dataset["status"] == "ready" and dataset["counts"]["rejected"] == 1200
    assert dataset["errors_total"] == 1200 and len(dataset["errors"]) == 1000
    assert dataset["errors"][0]["feature"] == "bad0"


# --------------------------------------------------------------------------- real data and every format


def test_the_real_portland_curblr_feed_imports_with_its_own_time_zone(operator):
    assert PORTLAND.exists(), f"the real CurbLR feed is missing: {PORTLAND}"
    dataset = operator.imported(PORTLAND, name="Portland downtown")

    assert (dataset["status"], dataset["format"], dataset["time_zone"]) == ("ready", "curblr", "America/Los_Angeles")
    assert dataset["counts"] == {"accepted": 416, "rejected": 0, "repaired": 0, "spots": 416}
    west, south, east, north = dataset["bbox"]
    assert -122.7 < west < east < -122.6 and 45.5 < south < north < 45.55
    with operator.database.session() as session:
        stored = session.get(Dataset, uuid.UUID(dataset["id"]))
        assert stored.file_metadata["timeZone"] == "America/Los_Angeles"
        first = session.scalar(select(LayerFeature).where(LayerFeature.dataset_id == stored.id,
                                                          LayerFeature.seq == 0))
    assert first.properties["kind"] == "curb" and first.properties["source"]["dataset"] == dataset["id"]
    operator.publish(dataset["id"])
    assert operator.live().dataset_id == uuid.UUID(dataset["id"])


def test_a_time_zone_given_at_upload_wins_over_the_files_own(operator):
    dataset = operator.imported(PORTLAND, time_zone="America/Denver")

    assert dataset["time_zone"] == "America/Denver"


@pytest.mark.parametrize(
    ("fixture", "fields", "expected"),
    [
        ("osm_street.geojson", {"format": "osm", "time_zone": "Europe/Berlin"}, ("osm", "Europe/Berlin")),
        ("osm_places.geojson", {}, ("osm", None)),
        ("cds_curbs.json", {}, ("cds", "America/New_York")),
        ("spots.csv", {}, ("csv", None)),
        ("spots_wkt.csv", {"format": "csv"}, ("csv", None)),
        ("normalized.geojson", {}, ("geojson", None)),
        ("small_manifest_last.curblr.json", {}, ("curblr", "America/Los_Angeles")),
    ],
)
def test_every_format_imports(operator, fixture, fields, expected):
    dataset = operator.imported(FIXTURES / fixture, **fields)

    assert dataset["status"] == "ready", dataset["failure"]
    assert (dataset["format"], dataset["time_zone"]) == expected
    assert dataset["counts"]["spots"] >= 1
    assert operator.feature_count(dataset["id"]) == dataset["counts"]["spots"]


def test_osm_street_parking_gives_a_curb_per_side(operator):
    dataset = operator.imported(FIXTURES / "osm_street.geojson", format="osm")

    with operator.database.session() as session:
        ids = set(session.scalars(select(LayerFeature.feature_id).where(
            LayerFeature.dataset_id == uuid.UUID(dataset["id"]))))
    assert {"way/1001:left", "way/1001:right"} <= ids
    assert dataset["counts"]["spots"] > dataset["counts"]["accepted"]


@pytest.mark.postgres
def test_on_postgresql_the_geography_column_is_filled(postgres_url, tmp_path):
    app = make_app(make_settings(tmp_path / "var", database_url=postgres_url))
    try:
        operator = Operator(app)
        dataset = operator.imported(FIXTURES / "cds_curbs.json")
        with operator.database.session() as session:
            filled = session.execute(text(
                "SELECT count(*) FROM layer_features WHERE dataset_id = :id AND geog IS NOT NULL"),
                {"id": uuid.UUID(dataset["id"])}).scalar()
        assert filled == dataset["counts"]["spots"] == 3
    finally:
        close_app(app)


# --------------------------------------------------------------------------- progress and idempotency


def test_progress_in_bytes_is_visible_while_importing_and_nothing_is_live(operator):
    content = feature_collection([space(f"s{i}", lon=2.3 + i * 1e-5, name=f"spot {i}") for i in range(6000)])
    dataset_id = operator.upload(content).get_json()["id"]
    seen: list[tuple[str, int, int, int]] = []

    def watch(done: int, total: int) -> None:
        body = operator.get(dataset_id)
        seen.append((body["status"], body["progress"]["done"], body["progress"]["total"], body["counts"]["spots"]))
        assert operator.live().dataset_id is None

    # Batches by count only: the time cut (every 2 s) made a batch of 865 once in a loaded full-suite run.
    operator.run(dataset_id, batch_size=1000, progress_interval_s=3600, on_progress=watch)

    during = [s for s in seen if s[0] == "importing"]
    assert len(during) >= 5
    assert all(total == len(content) for _, _, total, _ in seen)
    dones = [done for _, done, _, _ in during]
    assert dones == sorted(dones) and 0 < dones[0] < len(content)
    assert [spots for *_, spots in during[:5]] == [1000, 2000, 3000, 4000, 5000]
    final = operator.get(dataset_id)
    assert (final["status"], final["progress"]["done"], final["counts"]["spots"]) == ("ready", len(content), 6000)


def test_a_redelivered_message_for_a_finished_dataset_does_nothing(operator):
    dataset_id = operator.upload(feature_collection([space("a"), space("b")])).get_json()["id"]
    with operator.database.session() as session:
        outbox_id = session.scalar(select(OutboxMessage.id).where(OutboxMessage.task == IMPORT_TASK))
    assert operator.run(dataset_id, outbox_id=outbox_id).status == "ready"
    before = operator.get(dataset_id)

    again = operator.run(dataset_id, outbox_id=outbox_id)

    assert (again.status, again.ran) == ("ready", False)
    assert operator.get(dataset_id) == before and operator.feature_count(dataset_id) == 2
    with operator.database.session() as session:
        message = session.get(OutboxMessage, outbox_id)
    assert message.completed_at is not None


def test_a_dataset_found_importing_restarts_cleanly(operator):
    dataset_id = operator.upload(feature_collection([space(f"s{i}") for i in range(5)])).get_json()["id"]

    class WorkerDied(BaseException):
        pass

    def die(done: int, total: int) -> None:
        raise WorkerDied()

    with pytest.raises(WorkerDied):
        operator.run(dataset_id, batch_size=2, on_progress=die)
    assert operator.get(dataset_id)["status"] == "importing"
    assert operator.feature_count(dataset_id) == 2

    assert operator.run(dataset_id).status == "ready"
    dataset = operator.get(dataset_id)
    assert dataset["counts"]["spots"] == 5 and operator.feature_count(dataset_id) == 5
    with operator.database.session() as session:
        seqs = list(session.scalars(select(LayerFeature.seq).where(LayerFeature.dataset_id == uuid.UUID(dataset_id))
                                    .order_by(LayerFeature.seq)))
        assert session.get(Dataset, uuid.UUID(dataset_id)).import_attempts == 2
    assert seqs == [0, 1, 2, 3, 4]


def test_a_run_taken_over_by_a_redelivery_stops_writing(operator):
    dataset_id = operator.upload(feature_collection([space(f"s{i}") for i in range(6)])).get_json()["id"]
    inner: list[Any] = []

    def redelivered_meanwhile(done: int, total: int) -> None:
        if not inner:  # the same message arrives again while the first run is busy
            inner.append(operator.run(dataset_id))

    outer = operator.run(dataset_id, batch_size=2, on_progress=redelivered_meanwhile)

    assert inner[0].status == "ready" and (outer.status, outer.ran) == ("ready", False)
    assert operator.feature_count(dataset_id) == 6 and operator.get(dataset_id)["counts"]["spots"] == 6


def test_a_dataset_deleted_while_importing_stops_the_import_which_completes(operator):
    dataset_id = operator.upload(feature_collection([space(f"s{i}") for i in range(6)])).get_json()["id"]
    with operator.database.session() as session:
        outbox_id = session.scalar(select(OutboxMessage.id).where(OutboxMessage.task == IMPORT_TASK))

    def delete_it(done: int, total: int) -> None:
        delete_dataset(operator.database, operator.settings, uuid.UUID(dataset_id))

    outcome = operator.run(dataset_id, outbox_id=outbox_id, batch_size=2, on_progress=delete_it)

    assert (outcome.status, outcome.ran) == ("gone", False)
    assert operator.feature_count(dataset_id) == 0 and operator.uploads() == []
    with operator.database.session() as session:
        assert session.get(OutboxMessage, outbox_id).completed_at is not None


def test_deleting_a_queued_dataset_removes_its_upload_and_the_task_then_just_completes(operator):
    dataset_id = operator.upload(feature_collection([space("a")])).get_json()["id"]
    assert len(operator.uploads()) == 1

    operator.delete(dataset_id)

    assert operator.uploads() == []
    assert operator.run(dataset_id).status == "gone"


def test_an_upload_file_missing_on_the_worker_fails_the_dataset_with_a_hint(operator):
    dataset_id = operator.upload(feature_collection([space("a")])).get_json()["id"]
    for path in operator.uploads():
        path.unlink()

    operator.run(dataset_id)

    dataset = operator.get(dataset_id)
    assert dataset["status"] == "failed" and "SMARTSVC_UPLOAD_DIR" in dataset["failure"]


def test_the_import_task_has_its_own_long_time_limit_and_late_acks(make_dataset_app):
    app = make_dataset_app(import_time_limit_s=5400, task_soft_time_limit_s=60)
    task = app.extensions["celery"].tasks[IMPORT_TASK]

    assert (task.soft_time_limit, task.time_limit) == (5400, 5460)
    assert task.acks_late and task.reject_on_worker_lost


def test_stale_upload_files_are_purged_but_waiting_ones_and_foreign_files_stay(operator):
    waiting = operator.upload(feature_collection([space("a")])).get_json()["id"]
    folder = operator.settings.upload_folder
    orphans = [folder / f"{uuid.uuid4()}.upload", folder / f"{uuid.uuid4()}.upload.part"]
    foreign = folder / "README.txt"
    for path in (*orphans, foreign):
        path.write_bytes(b"x")
    for path in folder.iterdir():
        os.utime(path, (1_000_000_000, 1_000_000_000))  # 2001: old enough

    assert purge_stale_uploads(operator.database, operator.settings, timedelta(days=1)) == 2

    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{waiting}.upload", "README.txt"])
    assert operator.run(waiting).status == "ready"


def test_progress_is_written_even_while_a_file_yields_no_spots(operator):
    roads = [{"type": "Feature", "id": f"w{i}", "properties": {"highway": "residential", "name": f"Road {i}"},
              "geometry": {"type": "LineString", "coordinates": [[13.4, 52.5 + i * 1e-4], [13.401, 52.5 + i * 1e-4]]}}
             for i in range(300)]
    dataset_id = operator.upload(feature_collection(roads), format="osm").get_json()["id"]
    seen: list[tuple[str, int]] = []

    operator.run(dataset_id, progress_interval_s=0,
                 on_progress=lambda done, total: seen.append((operator.get(dataset_id)["status"], done)))

    assert len([s for s in seen if s[0] == "importing"]) >= 100
    dataset = operator.get(dataset_id)
    assert (dataset["status"], dataset["counts"]["spots"], dataset["counts"]["accepted"]) == ("ready", 0, 0)
